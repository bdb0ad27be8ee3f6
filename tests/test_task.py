"""The task (classification or regression) and the number of outputs come from the DataModule, in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmsdl.checkpoint import checkpoint_task
from cmsdl.config import compose_run_config
from cmsdl.data.base import CmsdlDataModule
from cmsdl.train import complete_model_config


class StubData(CmsdlDataModule):
    def __init__(self, task: str, names: list[str]) -> None:
        self.task, self.names = task, names

    @property
    def class_names(self) -> list[str]:
        return self.names

    def net_inputs(self) -> dict[str, int]:
        return {"in_features": 5}


@pytest.mark.parametrize(("experiment", "task", "names", "outputs"), [
    ("transfer_latency", "regression", ["log10_latency", "log10_queue"], 2),
    ("transfer_latency", "regression", ["log10_latency"], 1),
    ("workflow_actions", "classification", ["acdc", "clone"], 1),
    ("transfer_class", "classification", ["normal", "early", "late"], 3),
])
def test_outputs_follow_the_datamodules_task(tmp_path: Path, experiment: str, task: str, names: list[str],
                                             outputs: int) -> None:
    cfg = compose_run_config("train", [f"experiment={experiment}"], output_dir=tmp_path)
    complete_model_config(cfg, StubData(task, names))
    assert cfg.model.net.out_features == outputs and cfg.model.net.in_features == 5


def test_checkpoint_task_is_read_from_the_context_with_a_fallback_for_older_checkpoints() -> None:
    assert checkpoint_task({"cmsdl": {"task": "regression", "preprocessing": {}}}) == "regression"
    assert checkpoint_task({"cmsdl": {"preprocessing": {"kind": "tabular", "task": "regression"}}}) == "regression"
    assert checkpoint_task({"cmsdl": {"preprocessing": {"kind": "image"}}}) == "classification"
