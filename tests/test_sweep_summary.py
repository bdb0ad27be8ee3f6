"""Sweep summaries (summary.csv and its table) and resumable sweeps: finished points skipped, the others resumed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cmsdl.runs import find_resumable_run, is_finished
from cmsdl.sweeps import format_table, write_summary
from conftest import run_cmsdl, train_args


def make_point(sweep: Path, number: int, overrides: list[str], metrics: dict | None = None,
               error: str | None = None, checkpoint: bool = False) -> Path:
    point = sweep / str(number)
    (point / ".hydra").mkdir(parents=True)
    (point / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (point / "metrics.json").write_text(json.dumps(
            {"metrics": metrics, "best_checkpoint": str(point / "checkpoints" / "epoch_004.ckpt")}))
    if error is not None:
        (point / "error.json").write_text(json.dumps({"error": error}))
    if checkpoint:
        (point / "checkpoints").mkdir()
        (point / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    return point


def test_summary_has_a_row_per_point_with_status_metrics_and_error(tmp_path: Path) -> None:
    make_point(tmp_path, 0, ["experiment=x", "model.optimizer.lr=0.001"], {"val/loss": 0.5, "test/auroc": 0.9,
                                                                          "train/loss": 0.4})
    make_point(tmp_path, 1, ["experiment=x", "model.optimizer.lr=-1"], error="ConfigError: model.optimizer.lr")
    make_point(tmp_path, 2, ["experiment=x", "model.optimizer.lr=0.1"], checkpoint=True)
    make_point(tmp_path, 10, ["experiment=x", "model.optimizer.lr=1"])
    write_summary(tmp_path)
    with (tmp_path / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["point", "status", "overrides", "best_epoch", "test/auroc", "val/loss", "error", "run_dir"]
    assert [(r["point"], r["status"]) for r in rows] == [("0", "finished"), ("1", "failed"), ("2", "unfinished"),
                                                        ("10", "not finished")]
    assert rows[0]["best_epoch"] == "4" and rows[0]["val/loss"] == "0.5" and rows[0]["run_dir"] == str(tmp_path / "0")
    assert rows[1]["error"] == "ConfigError: model.optimizer.lr" and rows[1]["val/loss"] == ""
    table = format_table(rows).splitlines()
    assert table[0].split() == ["point", "status", "overrides", "best_epoch", "test/auroc", "val/loss", "error"]
    assert table[1].split()[:3] == ["0", "finished", "model.optimizer.lr=0.001"], "shared overrides are left out"


def test_k8s_points_without_hydra_files_are_read_from_point_json(tmp_path: Path) -> None:
    point = tmp_path / "0"
    point.mkdir()
    (point / "point.json").write_text(json.dumps({"overrides": ["model.optimizer.lr=0.1"], "job": "cmsdl-x-0"}))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "point.json").write_text(json.dumps({"overrides": ["model.optimizer.lr=1"]}))
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({"succeeded": False, "conditions": ["Failed"],
                                                            "metrics": {}}))
    rows = write_summary(tmp_path)
    assert [(r["status"], r["overrides"]) for r in rows] == [("submitted", "model.optimizer.lr=0.1"),
                                                            ("failed", "model.optimizer.lr=1")]
    assert rows[1]["error"] == "job did not succeed: Failed"


def write_multirun_yaml(sweep: Path, overrides: list[str]) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n" + "".join(f"    - {o}\n" for o in overrides))


def test_an_interrupted_sweep_is_found_for_resume_even_when_no_point_left_a_checkpoint(tmp_path: Path) -> None:
    overrides = ["experiment=x", "model.optimizer.lr=0.001,0.01"]
    done = tmp_path / "multiruns" / "done"
    write_multirun_yaml(done, overrides)
    make_point(done, 0, overrides[:1], {"val/loss": 0.5})
    write_summary(done)
    assert is_finished(done, "MULTIRUN")
    killed = tmp_path / "multiruns" / "killed"
    write_multirun_yaml(killed, overrides)
    make_point(killed, 0, overrides[:1], {"val/loss": 0.5})  # point 1 was never started: no checkpoint anywhere
    assert not is_finished(killed, "MULTIRUN")
    assert find_resumable_run(tmp_path, "MULTIRUN", sorted(overrides)) == "killed"
    make_point(killed, 1, overrides[:1], error="RuntimeError: boom")
    write_summary(killed)
    assert find_resumable_run(tmp_path, "MULTIRUN", sorted(overrides)) == "killed", "a failed point is run again"
    assert find_resumable_run(tmp_path, "MULTIRUN", ["experiment=y"]) is None


def test_an_optuna_search_whose_trials_all_finished_is_still_found_for_resume(tmp_path: Path) -> None:
    """A search with a study (study.json) is continued by resume=true, which may raise its n_trials."""
    overrides = ["experiment=x", "hparams_search=workflow_optuna"]
    search = tmp_path / "multiruns" / "search"
    write_multirun_yaml(search, overrides)
    make_point(search, 0, overrides, {"val/loss": 0.5})
    write_summary(search)
    assert is_finished(search, "MULTIRUN"), "without a study, an all-finished sweep is done"
    (search / "study.json").write_text(json.dumps({"study_name": "search", "storage": str(search / "optuna.db")}))
    assert not is_finished(search, "MULTIRUN")
    assert find_resumable_run(tmp_path, "MULTIRUN", sorted(overrides)) == "search"


@pytest.mark.slow
def test_sweep_with_a_failing_point_writes_its_summary_and_resume_skips_finished_points(
        tmp_path: Path, workflows_file: Path) -> None:
    args = [*train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=2", "test=false",
                        "callbacks.early_stopping.patience=100"), "-m", "model.optimizer.lr=0.001,-1,0.01"]
    first = run_cmsdl(*args, cwd=tmp_path, check=False)
    assert first.returncode == 1 and "1 of 3 sweep points failed" in first.stderr and "Traceback" not in first.stderr
    [sweep] = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    lines = first.stdout.splitlines()
    table = lines[[i for i, line in enumerate(lines) if line.startswith("point  status")][-1]:][:4]
    assert [line.split()[:3] for line in table[1:]] == [["0", "finished", "model.optimizer.lr=0.001"],
                                                       ["1", "failed", "model.optimizer.lr=-1"],
                                                       ["2", "finished", "model.optimizer.lr=0.01"]]
    # as a kill during point 2 leaves it: a last.ckpt, no metrics.json, no summary
    (sweep / "2" / "metrics.json").unlink()
    (sweep / "summary.csv").unlink()
    finished_point = (sweep / "0" / "metrics.json").read_bytes()

    again = run_cmsdl(*args, "resume=true", cwd=tmp_path, check=False)
    assert [p.name for p in (tmp_path / "logs" / "train" / "multiruns").iterdir()] == [sweep.name]
    assert (sweep / "0" / "metrics.json").read_bytes() == finished_point, "a finished point is not run again"
    assert "Restored all states from the checkpoint" in (sweep / "2" / "train.log").read_text()
    with (sweep / "summary.csv").open(newline="") as handle:
        assert [r["status"] for r in csv.DictReader(handle)] == ["finished", "failed", "finished"]
    assert again.returncode == 1
