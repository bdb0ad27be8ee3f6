"""The README's `cmsdl train` command lines as a user types them, with the default paths (no `paths.*` overrides):
sweeps (basic, Optuna, Kubernetes launcher), resume, bad values, and the run directory printed at the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cmsdl
from test_k8s_launcher import SweepApiServer

QUICK = ("trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0")  # documented overrides that keep tests short


@pytest.fixture()
def workdir(tmp_path: Path, workflows_file: Path) -> Path:
    """A working directory laid out as the README assumes: data/workflows.json, logs/ created by cmsdl."""
    (tmp_path / "data").mkdir()
    shutil.copy(workflows_file, tmp_path / "data" / "workflows.json")
    return tmp_path


def runs(workdir: Path) -> dict[str, Path]:
    return {d.name: d for d in (workdir / "logs" / "train" / "runs").iterdir()}


def test_readme_sweep_with_default_paths(workdir: Path) -> None:
    run_cmsdl("train", "-m", "experiment=workflow_actions", "model.optimizer.lr=1e-3,3e-4",
              "model.net.dropout=0.002,0.1", *QUICK, cwd=workdir)
    [sweep] = list((workdir / "logs" / "train" / "multiruns").iterdir())
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2", "3"]
    assert "dropout: 0.1" in (sweep / "3" / "config.yaml").read_text()


def test_readme_optuna_search_with_default_paths(workdir: Path) -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (the optuna extra)")
    run_cmsdl("train", "hparams_search=workflow_optuna", "experiment=workflow_actions", "hydra.sweeper.n_trials=2",
              *QUICK, cwd=workdir)
    [sweep] = list((workdir / "logs" / "train" / "multiruns").iterdir())
    assert (sweep / "optimization_results.yaml").is_file()


def test_readme_k8s_sweep_with_default_paths(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SweepApiServer(complete_on_read=True) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(workdir / "kubeconfig")))
        run_cmsdl("train", "-m", "experiment=workflow_actions", "model.optimizer.lr=1e-3,3e-4", "hydra/launcher=k8s",
                  "hydra.launcher.k8s.namespace=cms-ml", "hydra.launcher.wait=true", "hydra.launcher.poll_seconds=0.05",
                  cwd=workdir)
        jobs = [name for (_, plural, name) in api.objects if plural == "jobs"]
    assert len(jobs) == 2
    [sweep] = list((workdir / "logs" / "train" / "multiruns").iterdir())
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1"]
    collected = [json.loads((sweep / n / "metrics.json").read_text()) for n in ("0", "1")]
    assert all(c["metrics"]["test/auroc"] > 0.8 and c["pod_metrics_json"].startswith("/outputs/") for c in collected)


@pytest.mark.slow
def test_resume_picks_the_newest_unfinished_run_and_never_a_finished_one(workdir: Path) -> None:
    command = ("train", "experiment=workflow_actions", *QUICK)
    run_cmsdl(*command, "data.source.path=${paths.data_dir}/workflows.json", "run_name=interp", cwd=workdir)
    first = run_cmsdl(*command, cwd=workdir)
    [unfinished] = set(runs(workdir)) - {"interp"}
    assert f"run directory: logs/train/runs/{unfinished}" in first.stdout
    assert f"cmsdl eval ckpt=logs/train/runs/{unfinished}" in first.stdout
    (runs(workdir)[unfinished] / "metrics.json").unlink()  # as if killed after its last checkpoint
    run_cmsdl(*command, "run_name=ref", cwd=workdir)  # finished, and last by name

    resumed = run_cmsdl(*command, "resume=true", cwd=workdir)
    assert set(runs(workdir)) == {"interp", unfinished, "ref"}, "resumed in place, no new run"
    assert f"run directory: logs/train/runs/{unfinished}" in resumed.stdout
    ref_rows = (runs(workdir)["ref"] / "csv" / "metrics.csv").read_text().splitlines()

    again = run_cmsdl(*command, "resume=true", cwd=workdir)
    assert "has finished (metrics.json)" in again.stdout + again.stderr and "Traceback" not in again.stderr
    assert len(runs(workdir)) == 4, "every run of the command finished: a new run starts"
    assert (runs(workdir)["ref"] / "csv" / "metrics.csv").read_text().splitlines() == ref_rows


@pytest.mark.parametrize(("override", "key", "expected"), [
    ("model.optimizer.lr=abc", "model.optimizer.lr", "a number > 0"),
    ("data.batch_size=-5", "data.batch_size", "an integer >= 1"),
    ("trainer.max_epochs=abc", "trainer.max_epochs", "an integer >= 1"),
    ("seed=abc", "seed", "an integer from 0 to 2**32 - 1"),
    ("seed=99999999999999999999", "seed", "an integer from 0 to 2**32 - 1"),
    ("model.optimizer.lr=1e400", "model.optimizer.lr", "a number > 0"),
    ("model.net.dropout=1.5", "model.net.dropout", "a number in [0, 1)"),
])
def test_a_bad_value_is_one_error_line_naming_the_key(workdir: Path, override: str, key: str, expected: str) -> None:
    proc = run_cmsdl("train", "experiment=workflow_actions", override, cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: {key}: expected {expected}"), line
    assert not (workdir / "logs" / "train" / "runs").exists() or not any(
        (d / "checkpoints").exists() for d in runs(workdir).values()), "nothing was trained"


@pytest.mark.slow
def test_readme_delphes_data_config_is_a_datamodule(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [block] = [b for b in readme.split("```yaml\n")[1:] if b.startswith("# my-configs/data/delphes.yaml")]
    (tmp_path / "my-configs" / "data").mkdir(parents=True)
    (tmp_path / "my-configs" / "data" / "delphes.yaml").write_text(block.split("```")[0])
    proc = run_cmsdl("train", "data=delphes", "model=mlp", f"hydra.searchpath=[file://{tmp_path}/my-configs]",
                     cwd=tmp_path, check=False)
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "delphes_*.root" in line, "it gets as far as looking for the Delphes files"

    (tmp_path / "my-configs" / "data" / "delphes.yaml").write_text("spec:\n  tree: Delphes\n")
    proc = run_cmsdl("train", "data=delphes", "model=mlp", f"hydra.searchpath=[file://{tmp_path}/my-configs]",
                     cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "error: data: no _target_" in proc.stderr and "Traceback" not in proc.stderr
