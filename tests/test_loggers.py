"""Training loggers: the resumable CSV log, MLflow runs read back through MLflow's client, TensorBoard event files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cmsdl.loggers import MLFLOW_RUN_FILE, ResumableCSVLogger, TrackedMLFlowLogger, attach_to_tracked_run, flatten
from conftest import run_cmsdl, train_args


def read_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_csv_log_of_a_resumed_run_keeps_earlier_rows_and_widens_its_header(tmp_path: Path) -> None:
    first = ResumableCSVLogger(tmp_path)
    first.log_metrics({"epoch": 0, "val/loss": 0.5}, step=3)
    first.finalize("success")
    resumed = ResumableCSVLogger(tmp_path)
    resumed.log_metrics({"epoch": 1, "val/loss": 0.4}, step=7)
    resumed.log_metrics({"epoch": 1, "train/loss": 0.3}, step=7)
    resumed.save()
    header, *rows = read_rows(tmp_path / "csv" / "metrics.csv")
    assert header == ["epoch", "step", "train/loss", "val/loss"]
    assert rows == [["0", "3", "", "0.5"], ["1", "7", "", "0.4"], ["1", "7", "0.3", ""]]


def test_csv_log_appends_under_the_existing_header(tmp_path: Path) -> None:
    for epoch in range(3):
        logger = ResumableCSVLogger(tmp_path, flush_logs_every_n_steps=1)
        logger.log_metrics({"epoch": epoch, "val/loss": 1.0 / (epoch + 1)}, step=epoch)
    header, *rows = read_rows(tmp_path / "csv" / "metrics.csv")
    assert header == ["epoch", "step", "val/loss"] and [r[0] for r in rows] == ["0", "1", "2"]


def test_flatten_names_nested_keys_with_dots() -> None:
    assert flatten({"model": {"optimizer": {"lr": 0.001}}, "tags": ["a"]}) == {"model.optimizer.lr": "0.001",
                                                                              "tags": "['a']"}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module's tests (creating its tables takes seconds)."""
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.slow
def test_resumed_mlflow_run_is_the_same_run_with_its_whole_history(tmp_path: Path, mlflow_store: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    run_dir = tmp_path / "runs" / "r1"
    config = {"model": {"optimizer": {"lr": 0.001}}, "seed": 1}
    first = TrackedMLFlowLogger(run_dir, experiment_name="resume-test", tracking_uri=mlflow_store,
                                tags={"sweep": "s1"})
    first.log_params(config)
    for epoch in (0, 1):
        first.log_metrics({"epoch": epoch, "val/loss": 1.0 - epoch / 10}, step=10 * epoch)
    first.finalize("failed")
    assert json.loads((run_dir / MLFLOW_RUN_FILE).read_text())["run_id"] == first.run_id
    assert "MLFLOW_TRACKING_URI" not in os.environ, "a run's store is not exported to later runs and subprocesses"

    resumed = TrackedMLFlowLogger(run_dir, experiment_name="resume-test", tracking_uri=mlflow_store)
    resumed.log_params(config | {"seed": 2})  # a param cannot change: the run keeps what it started with
    resumed.log_metrics({"epoch": 2, "val/loss": 0.7}, step=20)
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "csv").mkdir()
    (run_dir / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,0,1.0\n1,10,0.9\n2,20,0.7\n")
    resumed.log_run_outputs(run_dir)
    resumed.finalize("success")

    client = MlflowClient(mlflow_store)
    [run] = client.search_runs([client.get_experiment_by_name("resume-test").experiment_id])
    assert run.info.run_id == first.run_id and run.info.status == "FINISHED"
    assert run.data.params == {"model.optimizer.lr": "0.001", "seed": "1"}
    assert run.data.tags["sweep"] == "s1" and run.data.tags["run_dir"] == str(run_dir)
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert [(m.step, round(m.value, 3)) for m in history] == [(0, 1.0), (1, 0.9), (2, 0.7)]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "training_curves.png", "csv"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "csv")] == ["csv/metrics.csv"]

    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "roc.png").write_bytes(b"\x89PNG")
    attach_to_tracked_run(run_dir, evaluation, "eval/e1")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval/e1")] == ["eval/e1/roc.png"]


def test_a_run_id_missing_from_the_store_starts_a_new_mlflow_run(tmp_path: Path, mlflow_store: str) -> None:
    (tmp_path / MLFLOW_RUN_FILE).write_text(json.dumps({"run_id": "0" * 32, "tracking_uri": mlflow_store}))
    logger = TrackedMLFlowLogger(tmp_path, experiment_name="missing-test", tracking_uri=mlflow_store)
    assert logger.run_id != "0" * 32
    assert json.loads((tmp_path / MLFLOW_RUN_FILE).read_text())["run_id"] == logger.run_id


@pytest.mark.slow
def test_train_with_every_logger_then_resume_continues_the_same_mlflow_run(tmp_path: Path,
                                                                           workflows_file: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = train_args(workflows_file, tmp_path / "logs", "logger=many", "run_name=r", "test=false",
                      "callbacks.early_stopping.patience=100")
    first = run_cmsdl(*args, "trainer.max_epochs=2", cwd=tmp_path)
    run_cmsdl(*args, "trainer.max_epochs=4", "resume=true", cwd=tmp_path)
    run_dir = tmp_path / "logs" / "train" / "runs" / "r"
    assert "mlflow.store" not in first.stdout + first.stderr, "MLflow's own messages stay in the log file"
    assert "mlflow.store" in (run_dir / "train.log").read_text()

    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("workflow_actions").experiment_id])
    assert run.data.params["model.optimizer.lr"] and run.data.params["data.batch_size"]
    assert run.data.tags["experiment"] == "workflow_actions" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [0, 1, 2, 3]
    assert {"config.yaml", "metrics.json", "training_curves.png"} <= {a.path for a in
                                                                      client.list_artifacts(run.info.run_id)}

    run_cmsdl("eval", f"ckpt={run_dir}", f"paths.log_dir={tmp_path / 'logs'}", "run_name=e1", cwd=tmp_path)
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "eval/e1")}
    assert {"eval/e1/roc.png", "eval/e1/metrics.json"} <= evaluation, "cmsdl eval adds its report to the run"

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert len(events.Scalars("val/loss")) >= 2
    assert len(read_rows(run_dir / "csv" / "metrics.csv")) > 4
