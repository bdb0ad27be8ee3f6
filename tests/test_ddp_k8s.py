"""DDP for real: two local processes get exactly the command line and environment of two pods of the rendered
Indexed Job (only MASTER_ADDR, the pod-0 DNS name, becomes 127.0.0.1) and train one model with gloo on CPU;
a run stopped by SIGTERM midway is started again with the same command and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cmsdl.k8s.manifests import COMPLETION_INDEX, render
from conftest import REPO

pytestmark = pytest.mark.slow
JOB = "ddp-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered_job(data_dir: Path, out_dir: Path, train: list[str]) -> dict:
    k8s = OmegaConf.load(REPO / "configs" / "k8s" / "default.yaml")
    k8s.merge_with({"nodes": 2, "gpus_per_node": 0, "master_port": free_port(),
                    "data": {"mount_path": str(data_dir)}, "outputs": {"mount_path": str(out_dir)}})
    [_, job] = render(k8s, train, name=JOB)
    return job


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args from the container's environment."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def pod_invocation(job: dict, index: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the pod with completion index `index`, as the kubelet would start it."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    annotations = {COMPLETION_INDEX: str(index)}
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = annotations[re.fullmatch(r"metadata\.annotations\['(.+)'\]", path).group(1)]
    env["MASTER_ADDR"] = "127.0.0.1"  # the Service's DNS name of pod 0; there is no cluster DNS here
    argv = [expand(a, env) for a in container["command"] + container["args"]]
    return argv, env


def start_pods(job: dict, log_dir: Path, attempt: str) -> list[subprocess.Popen]:
    base = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": "1"}
    procs = []
    for index in range(job["spec"]["completions"]):
        argv, env = pod_invocation(job, index)
        log = open(log_dir / f"{attempt}-pod{index}.log", "w")
        procs.append(subprocess.Popen(argv, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir))
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    return codes


def run_dir(out_dir: Path) -> Path:
    return out_dir / "train" / "runs" / JOB


def logs(log_dir: Path, attempt: str) -> str:
    return "\n".join(p.read_text() for p in sorted(log_dir.glob(f"{attempt}-pod*.log")))


TRAIN = ["experiment=workflow_actions", "callbacks.progress_bar.refresh_rate=0", "data.batch_size=32",
         "callbacks.early_stopping.patience=100", "test=true"]


def test_two_pods_train_one_model_with_one_set_of_artefacts(tmp_path: Path, workflows_file: Path) -> None:
    out = tmp_path / "outputs"
    job = rendered_job(workflows_file.parent, out, [*TRAIN, "trainer.max_epochs=2"])
    codes = wait_all(start_pods(job, tmp_path, "run"))
    text = logs(tmp_path, "run")
    assert codes == [0, 0], text[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, "the second pod did not join the process group"
    assert [d.name for d in (out / "train" / "runs").iterdir()] == [JOB], "one run directory for all ranks"
    summary = json.loads((run_dir(out) / "metrics.json").read_text())
    assert summary["epochs"] == 2 and 0.5 < summary["metrics"]["test/auroc"] <= 1.0
    assert (run_dir(out) / "config.yaml").is_file() and (run_dir(out) / "checkpoints" / "last.ckpt").is_file()
    assert not list(run_dir(out).glob("**/.*.tmp")), "no half-written artefacts"
    config = OmegaConf.load(run_dir(out) / "config.yaml")
    assert config.trainer.num_nodes == 2 and config.trainer.strategy == "ddp"


def test_sigterm_midway_then_the_same_command_resumes_and_matches_an_uninterrupted_run(
        tmp_path: Path, workflows_file: Path) -> None:
    epochs = 12
    train = [*TRAIN, f"trainer.max_epochs={epochs}"]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    stopped.mkdir(), straight.mkdir()
    job = rendered_job(workflows_file.parent, stopped / "outputs", train)
    procs = start_pods(job, stopped, "first")
    last = run_dir(stopped / "outputs") / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not last.is_file():
        time.sleep(0.05)  # the first epoch is done: stop the run in the middle, as a preemption would
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    codes = wait_all(procs)
    text = logs(stopped, "first")
    assert all(code != 0 for code in codes), f"a preempted pod must not look finished: {codes}\n{text[-3000:]}"
    assert "SIGTERM at epoch" in text, text[-3000:]
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert 0 < saved["epoch"] < epochs - 1, f"SIGTERM checkpoint at epoch {saved['epoch']}"
    assert not (run_dir(stopped / "outputs") / "metrics.json").exists()

    assert wait_all(start_pods(job, stopped, "again")) == [0, 0], logs(stopped, "again")[-4000:]
    assert "Restoring states from the checkpoint path" in logs(stopped, "again")
    resumed = json.loads((run_dir(stopped / "outputs") / "metrics.json").read_text())

    reference = rendered_job(workflows_file.parent, straight / "outputs", train)
    assert wait_all(start_pods(reference, straight, "run")) == [0, 0], logs(straight, "run")[-4000:]
    uninterrupted = json.loads((run_dir(straight / "outputs") / "metrics.json").read_text())
    assert resumed["epochs"] == uninterrupted["epochs"] == epochs
    # tolerance: the interrupted epoch restarts its data order, so the runs see a few batches differently
    for key, tol in (("test/auroc", 0.02), ("test/acc", 0.03), ("test/loss", 0.05)):
        assert abs(resumed["metrics"][key] - uninterrupted["metrics"][key]) <= tol, (key, resumed, uninterrupted)
