"""The Optuna `hparams_search` config runs with the local launcher and optimises what `cmsdl train` returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cmsdl, train_args

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")


def test_optuna_search_runs_trials_and_reports_the_best(tmp_path: Path, workflows_file: Path) -> None:
    run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "hparams_search=workflow_optuna",
                          "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "test=false", "run_name=search"),
              cwd=tmp_path)
    sweep = tmp_path / "logs" / "train" / "multiruns" / "search"
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.net.dropout", "data.batch_size"}
    assert 0 < best["best_value"] < 1.5, "val/loss of the best trial"
