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
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["0", "finished"], ["1", "finished"]]
    assert "model.optimizer.lr=" in rows[1] and "val/loss" in rows[0]


def test_resuming_a_search_whose_study_is_in_memory_is_refused(tmp_path: Path, workflows_file: Path) -> None:
    proc = run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "hparams_search=workflow_optuna", "resume=true"),
                     cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "hydra.sweeper.storage is null" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("logs/train/multiruns/*/0"))
