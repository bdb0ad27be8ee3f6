"""Shared fixtures: synthetic data written once per session, and a runner for the real `cmsdl` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmsdl.sim.workflows import simulate_workflows

REPO = Path(__file__).resolve().parents[1]


def run_cmsdl(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `cmsdl <args>` in a fresh interpreter, as a user would; output captured as text."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "cmsdl.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cmsdl {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def workflows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1500 synthetic workflows (acdc/clone/kill) as a JSON document."""
    path = tmp_path_factory.mktemp("data") / "workflows.json"
    path.write_text(json.dumps(simulate_workflows(n_workflows=1500, seed=3)))
    return path


def train_args(data_file: Path, log_dir: Path, *extra: str) -> list[str]:
    """`cmsdl train` arguments for a quick CPU run of the seed experiment on `data_file`."""
    return ["train", "experiment=workflow_actions", f"data.source.path={data_file}", f"paths.log_dir={log_dir}",
            "trainer=cpu", "callbacks.progress_bar.refresh_rate=0", *extra]


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, workflows_file: Path) -> Path:
    """The best checkpoint of a short `cmsdl train experiment=workflow_actions` run."""
    work = tmp_path_factory.mktemp("trained")
    run_cmsdl(*train_args(workflows_file, work / "logs", "trainer.max_epochs=3", "run_name=r"), cwd=work)
    summary = json.loads((work / "logs" / "train" / "runs" / "r" / "metrics.json").read_text())
    return Path(summary["best_checkpoint"])


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory, trained_checkpoint: Path) -> Path:
    """`cmsdl export` of the trained workflow-action model, with int8 and fp16 siblings."""
    out = tmp_path_factory.mktemp("exported") / "workflow_actions.onnx"
    run_cmsdl("export", f"ckpt={trained_checkpoint}", f"out={out}", "quantize=true", "fp16=true", cwd=out.parent)
    return out
