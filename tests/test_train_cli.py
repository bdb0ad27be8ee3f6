"""`cmsdl train` / `cmsdl eval` end to end, as a user runs them: artefacts, resume, sweeps, clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cmsdl, train_args


def only_run_dir(log_dir: Path) -> Path:
    [run_dir] = list((log_dir / "train" / "runs").iterdir())
    return run_dir


def test_help_lists_commands_and_train_help_shows_config(tmp_path: Path) -> None:
    out = run_cmsdl("--help", cwd=tmp_path).stdout
    for command in ("train", "eval", "simulate-workflows", "cluster-workflows"):
        assert command in out
    train_help = run_cmsdl("train", "--help", cwd=tmp_path).stdout
    assert "experiment" in train_help and "trainer" in train_help and "cpu, ddp, default, gpu" in train_help


def test_unknown_command_suggests_the_closest(tmp_path: Path) -> None:
    proc = run_cmsdl("trian", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "did you mean 'train'" in proc.stderr


def test_train_then_eval_write_every_artefact(tmp_path: Path, workflows_file: Path) -> None:
    trained = run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=6"), cwd=tmp_path)
    run_dir = only_run_dir(tmp_path / "logs")
    terminal = trained.stdout + trained.stderr
    assert [line.split(" - ", 1)[1].split()[:2] for line in terminal.splitlines() if "] - epoch " in line] == \
        [["epoch", f"{n}/6"] for n in range(1, 7)], "one line per epoch"
    assert "Total params" not in terminal and "network:" not in terminal and "Tip" not in terminal
    assert "Total params" in (run_dir / "train.log").read_text(), "the layer table is in the log file"
    for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/last.ckpt",
                 "csv/metrics.csv", "metrics.json", "train.log"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs"] == 6 and Path(summary["best_checkpoint"]).is_file()
    assert summary["metrics"]["test/auroc"] > 0.7, "the seed DNN should learn the synthetic task"
    assert "in_features: 4" in (run_dir / "config.yaml").read_text(), "resolved config holds the fitted input size"
    network = (run_dir / "train.log").read_text()
    assert network.count("Linear(in_features=75, out_features=75, bias=True)") == 4
    assert network.count("Dropout(p=0.002, inplace=False)") == 5 and "Linear(in_features=75, out_features=1" in network

    run_cmsdl("eval", f"ckpt={summary['best_checkpoint']}", f"paths.log_dir={tmp_path / 'logs'}", "run_name=e1",
              cwd=tmp_path)
    eval_dir = tmp_path / "logs" / "eval" / "runs" / "e1"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert abs(metrics["auroc"] - summary["metrics"]["test/auroc"]) < 1e-4, "eval reproduces the test AUC"
    assert len(metrics["confusion_matrix"]) == 2 and sum(map(sum, metrics["confusion_matrix"])) == metrics["n"]
    for png in ("roc.png", "confusion.png"):
        assert (eval_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert (eval_dir / "predictions.csv").read_text().splitlines()[0] == "id,true,predicted,p_acdc,p_clone"


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path: Path, workflows_file: Path) -> None:
    args = train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=25", "data.batch_size=8",
                      "callbacks.early_stopping.patience=1000", "test=false")
    proc = subprocess.Popen([sys.executable, "-m", "cmsdl.cli", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = only_run_dir(tmp_path / "logs")
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert killed_at < 24 and not (run_dir / "metrics.json").exists(), "the run should have been killed midway"

    resumed = run_cmsdl(*args, "resume=true", cwd=tmp_path)
    assert only_run_dir(tmp_path / "logs") == run_dir, "resume continues in the same run directory"
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs"] == 25
    epochs = [line.split(",")[0] for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    assert "0" in epochs and "24" in epochs, "metrics of both attempts are kept"


def test_fresh_run_never_overwrites_an_existing_one(tmp_path: Path, workflows_file: Path) -> None:
    args = train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=1", "run_name=fixed", "test=false")
    run_cmsdl(*args, cwd=tmp_path)
    again = run_cmsdl(*args, cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr


def test_multirun_sweep_writes_one_run_per_point(tmp_path: Path, workflows_file: Path) -> None:
    run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=1", "test=false"),
              "-m", "model.optimizer.lr=0.001,0.01", cwd=tmp_path)
    [sweep] = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    assert "lr: 0.01" in (sweep / "1" / "config.yaml").read_text()


def test_bad_input_file_is_one_clear_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"workflows": [{"name": "wf1", "action": "acdc", "tasks": [{"errors": {"84": {"T1_US_FNAL": -2}}}]}]}')
    proc = run_cmsdl(*train_args(bad, tmp_path / "logs"), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert str(bad) in line and "workflow 'wf1'" in line and "expected a non-negative integer count, got -2" in line


def test_eval_of_a_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    proc = run_cmsdl("eval", f"ckpt={tmp_path / 'nope.ckpt'}", f"paths.log_dir={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "nope.ckpt does not exist" in proc.stderr and "Traceback" not in proc.stderr
