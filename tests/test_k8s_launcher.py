"""`cmsdl train -m ... hydra/launcher=k8s` submits one labelled job per sweep point to the (stand-in) API server,
waits, and collects each point's metrics; typos fail locally before anything is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmsdl.k8s.manifests import LABEL_SWEEP
from conftest import run_cmsdl
from hydra_plugins.cmsdl_k8s_launcher.k8s_launcher import job_prefix, parse_metrics
from test_k8s_api import FakeApiServer


def test_parse_metrics_reads_the_last_metrics_line() -> None:
    lines = ["[x][cmsdl.train][INFO] - metrics: val/loss=0.9000", "noise",
             "[2026-01-01 10:00:00,1][cmsdl.train][INFO] - metrics: test/auroc=0.8312, val/loss=4.5e-01, x=nan"]
    metrics = parse_metrics(lines)
    assert metrics["test/auroc"] == 0.8312 and metrics["val/loss"] == 0.45 and metrics["x"] != metrics["x"]
    assert parse_metrics(["no metrics here"]) == {}


def test_job_prefix_is_a_valid_name_stem() -> None:
    assert job_prefix("workflow_actions", Path("logs/train/multiruns/2026-01-01_10-00-00")) == \
        "cmsdl-workflow-actions-2026-01-01-10-00-00"


def test_sweep_submits_one_job_per_point_waits_and_collects_metrics(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer(complete_on_read=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        run_cmsdl("train", "-m", "experiment=workflow_actions", "model.optimizer.lr=1e-3,3e-4", "hydra/launcher=k8s",
                  "hydra.launcher.wait=true", "hydra.launcher.poll_seconds=0.05", "hydra.launcher.k8s.namespace=physics",
                  "run_name=sweep1", f"paths.log_dir={tmp_path / 'logs'}", "+optimized_metric=test/auroc", cwd=tmp_path)
        jobs = {name: obj for (ns, plural, name), obj in api.objects.items() if plural == "jobs"}
    assert sorted(jobs) == ["cmsdl-workflow-actions-sweep1-0", "cmsdl-workflow-actions-sweep1-1"]
    assert {j["metadata"]["labels"][LABEL_SWEEP] for j in jobs.values()} == {"sweep1"}
    args = jobs["cmsdl-workflow-actions-sweep1-1"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "model.optimizer.lr=0.0003" in args and "run_name=cmsdl-workflow-actions-sweep1-1" in args
    assert "paths.log_dir=/outputs" in args, "local paths stay local; the pods write to the outputs claim"
    sweep_dir = tmp_path / "logs" / "train" / "multiruns" / "sweep1"
    collected = [json.loads((sweep_dir / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [c["metrics"]["test/auroc"] for c in collected] == [0.801, 0.8003]
    assert all(c["succeeded"] for c in collected)
    assert (sweep_dir / "1" / "manifests.yaml").is_file()


def test_a_typo_in_a_sweep_fails_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        proc = run_cmsdl("train", "-m", "model.optimizer.lrr=1e-3,3e-4", "hydra/launcher=k8s",
                         f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path, check=False)
        assert proc.returncode != 0 and "model.optimizer.lrr" in proc.stderr
        assert not any(method == "POST" for method, _ in api.requests)


def test_a_failed_point_fails_the_sweep_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer(complete_on_read=True, fail_jobs=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        proc = run_cmsdl("train", "-m", "model.optimizer.lr=1e-3", "hydra/launcher=k8s", "hydra.launcher.wait=true",
                         "hydra.launcher.poll_seconds=0.05", "run_name=bad", f"paths.log_dir={tmp_path / 'logs'}",
                         cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "did not succeed: Failed" in proc.stderr
    recorded = json.loads((tmp_path / "logs" / "train" / "multiruns" / "bad" / "0" / "metrics.json").read_text())
    assert recorded["succeeded"] is False and recorded["conditions"] == ["Failed"]
