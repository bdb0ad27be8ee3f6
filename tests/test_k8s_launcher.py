"""`cmsdl train -m ... hydra/launcher=k8s` submits one labelled job per sweep point to the (stand-in) API server,
waits, and collects each point's metrics.json (printed by the pod as one JSON line); typos fail locally before
anything is submitted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cmsdl.k8s.manifests import LABEL_SWEEP
from conftest import run_cmsdl, train_args
from hydra_plugins.cmsdl_k8s_launcher.k8s_launcher import (
    METRICS_JSON_KEY,
    PRINT_METRICS_JSON,
    PrintMetricsJson,
    job_prefix,
    metrics_json_line,
    read_metrics_json_line,
)
from test_k8s_api import FakeApiServer


class SweepApiServer(FakeApiServer):
    """The stand-in API server, with rank-0 logs that end as a sweep pod's do: the metrics.json line printed by
    PrintMetricsJson (test_a_pod_prints_its_metrics_json_as_one_line checks that a real `cmsdl train` prints it)."""

    def log_of(self, pod: dict) -> str:
        args = pod["spec"]["containers"][0]["args"]
        if PRINT_METRICS_JSON not in args:
            return super().log_of(pod)
        lr = float(next((a.split("=", 1)[1] for a in args if a.startswith("model.optimizer.lr=")), 1e-3))
        run_dir = f"/outputs/train/runs/{next(a.split('=', 1)[1] for a in args if a.startswith('run_name='))}"
        contents = {"run_dir": run_dir, "epochs": 3, "best_checkpoint": f"{run_dir}/checkpoints/epoch_002.ckpt",
                    "metrics": {"test/auroc": 0.8 + lr, "val/loss": 1 - lr}}
        return (super().log_of(pod) + metrics_json_line(Path(run_dir) / "metrics.json", contents) + "\n"
                + "[W socket.cpp:464] the process group was destroyed\n")


@pytest.mark.parametrize("description, lines, expected", [
    ("the last metrics.json line wins", ["noise", metrics_json_line(Path("/o/a/metrics.json"), {"metrics": {"x": 1}}),
                                         metrics_json_line(Path("/o/b/metrics.json"), {"metrics": {"x": 2}}), "done"],
     {METRICS_JSON_KEY: "/o/b/metrics.json", "contents": {"metrics": {"x": 2}}}),
    ("other JSON lines and broken ones are skipped", [metrics_json_line(Path("/o/metrics.json"), {"metrics": {}}),
                                                      '{"level": "info"}', '{"cmsdl_metrics_json": "/o/x", "con'],
     {METRICS_JSON_KEY: "/o/metrics.json", "contents": {"metrics": {}}}),
    ("no metrics.json line", ["[x][cmsdl.train][INFO] - metrics: val/loss=0.9000", "{}"], None),
])
def test_read_metrics_json_line(description: str, lines: list[str], expected: dict | None) -> None:
    assert read_metrics_json_line(lines) == expected, description


def test_a_non_finite_metric_survives_the_line() -> None:
    printed = read_metrics_json_line([metrics_json_line(Path("m.json"), {"metrics": {"x": float("nan")}})])
    assert printed is not None and printed["contents"]["metrics"]["x"] != printed["contents"]["metrics"]["x"]


def test_a_pod_prints_its_metrics_json_as_one_line(tmp_path: Path, workflows_file: Path) -> None:
    """The pod override, run by a real `cmsdl train`: the last JSON line of its output is its metrics.json."""
    proc = run_cmsdl(*train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=1", "run_name=pod",
                                 PRINT_METRICS_JSON), cwd=tmp_path)
    printed = read_metrics_json_line(proc.stdout.splitlines())
    metrics_json = tmp_path / "logs" / "train" / "runs" / "pod" / "metrics.json"
    assert printed == {METRICS_JSON_KEY: str(metrics_json), "contents": json.loads(metrics_json.read_text())}
    assert "test/auroc" in printed["contents"]["metrics"]


@pytest.mark.parametrize("description, rank, status, printed", [
    ("global rank 0 of a finished run prints", "0", JobStatus.COMPLETED, True),
    ("other ranks stay quiet", "3", JobStatus.COMPLETED, False),
    ("a failed run prints nothing", "0", JobStatus.FAILED, False),
])
def test_only_rank_0_of_a_finished_run_prints(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, description: str, rank: str,
                                             status: JobStatus, printed: bool) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"val/loss": 0.5}}))
    monkeypatch.setenv("RANK", rank)
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    PrintMetricsJson().on_job_end(config, JobReturn(status=status))
    assert (read_metrics_json_line(capsys.readouterr().out.splitlines()) is not None) == printed, description


def test_job_prefix_is_a_valid_name_stem() -> None:
    assert job_prefix("workflow_actions", Path("logs/train/multiruns/2026-01-01_10-00-00")) == \
        "cmsdl-workflow-actions-2026-01-01-10-00-00"


def test_sweep_submits_one_job_per_point_waits_and_collects_metrics(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with SweepApiServer(complete_on_read=True) as api:
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
    assert PRINT_METRICS_JSON in args, "the pods print their metrics.json for the launcher"
    sweep_dir = tmp_path / "logs" / "train" / "multiruns" / "sweep1"
    collected = [json.loads((sweep_dir / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [c["metrics"]["test/auroc"] for c in collected] == pytest.approx([0.801, 0.8003])
    assert [c["pod_metrics_json"] for c in collected] == \
        [f"/outputs/train/runs/cmsdl-workflow-actions-sweep1-{i}/metrics.json" for i in (0, 1)]
    assert collected[1]["best_checkpoint"].endswith("sweep1-1/checkpoints/epoch_002.ckpt")
    assert all(c["succeeded"] for c in collected)
    assert (sweep_dir / "1" / "manifests.yaml").is_file()
    with (sweep_dir / "summary.csv").open(newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [(r["status"], r["best_epoch"], r["test/auroc"]) for r in summary] == [("finished", "2", "0.801"),
                                                                                 ("finished", "2", "0.8003")]
    assert "model.optimizer.lr=0.0003" in summary[1]["overrides"].split()


def test_a_typo_in_a_sweep_fails_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        proc = run_cmsdl("train", "-m", "model.optimizer.lrr=1e-3,3e-4", "hydra/launcher=k8s",
                         f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path, check=False)
        assert proc.returncode != 0 and "model.optimizer.lrr" in proc.stderr
        assert not any(method == "POST" for method, _ in api.requests)


def test_a_failed_point_fails_the_sweep_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SweepApiServer(complete_on_read=True, fail_jobs=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        proc = run_cmsdl("train", "-m", "model.optimizer.lr=1e-3", "hydra/launcher=k8s", "hydra.launcher.wait=true",
                         "hydra.launcher.poll_seconds=0.05", "run_name=bad", f"paths.log_dir={tmp_path / 'logs'}",
                         cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "did not succeed: Failed" in proc.stderr
    recorded = json.loads((tmp_path / "logs" / "train" / "multiruns" / "bad" / "0" / "metrics.json").read_text())
    assert recorded["succeeded"] is False and recorded["conditions"] == ["Failed"]
    summary = (tmp_path / "logs" / "train" / "multiruns" / "bad" / "summary.csv").read_text().splitlines()
    assert summary[1].startswith("0,failed,model.optimizer.lr=0.001") and "did not succeed: Failed" in summary[1]


def test_a_pod_log_without_the_line_is_recorded_without_metrics(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An image without PrintMetricsJson (rank 0's log ends with `cmsdl train`'s own log): no metrics, one warning."""
    with FakeApiServer(complete_on_read=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        proc = run_cmsdl("train", "-m", "model.optimizer.lr=1e-3", "hydra/launcher=k8s", "hydra.launcher.wait=true",
                         "hydra.launcher.poll_seconds=0.05", "run_name=old", f"paths.log_dir={tmp_path / 'logs'}",
                         cwd=tmp_path)
    assert f"no metrics collected: rank 0's log has no '{METRICS_JSON_KEY}' line" in proc.stdout + proc.stderr
    recorded = json.loads((tmp_path / "logs" / "train" / "multiruns" / "old" / "0" / "metrics.json").read_text())
    assert recorded["succeeded"] is True and recorded["metrics"] == {} and recorded["pod_metrics_json"] is None
