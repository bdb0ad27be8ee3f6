"""The Optuna `hparams_search` config runs with the local launcher, or the k8s one, and optimises what `cmsdl train`
returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cmsdl, train_args
from test_k8s_launcher import SweepApiServer

optuna = pytest.importorskip("optuna", reason="optuna is not installed (the optuna extra)")


@pytest.mark.slow
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
    assert (sweep / "optuna.db").is_file() and (sweep / "study.json").is_file(), "the study is kept in the sweep dir"


def test_resuming_a_search_whose_study_is_in_memory_is_refused(tmp_path: Path, workflows_file: Path) -> None:
    proc = run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "hparams_search=workflow_optuna", "resume=true",
                                 "hydra.sweeper.storage=null"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "hydra.sweeper.storage is null" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("logs/train/multiruns/*/0"))


@pytest.mark.slow
def test_optuna_search_launches_batches_of_n_jobs_as_k8s_jobs_and_tells_their_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SweepApiServer(complete_on_read=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        run_cmsdl("train", "hparams_search=workflow_optuna", "experiment=workflow_actions", "hydra/launcher=k8s",
                  "hydra.launcher.wait=true", "hydra.launcher.poll_seconds=0.05", "hydra.launcher.k8s.namespace=ml",
                  "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "run_name=s", f"paths.log_dir={tmp_path}",
                  cwd=tmp_path)
        jobs = sorted(name for (_, plural, name) in api.objects if plural == "jobs")
    assert jobs == [f"cmsdl-workflow-actions-s-{n}" for n in range(3)], "job number = trial number"
    sweep = tmp_path / "train" / "multiruns" / "s"
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in trials:  # the stand-in pods report val/loss = 1 - lr
        assert trial.value == pytest.approx(1 - trial.params["model.optimizer.lr"])
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["0", "finished"], ["1", "finished"], ["2", "finished"]]
