"""hydra/sweeper=cmsdl_optuna: the search space from Hydra's sweep syntax, trial outcomes, and a killed search that
resume=true continues from its study in the sweep directory (Optuna's own SQLite storage)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from cmsdl.errors import ConfigError  # noqa: E402
from conftest import run_cmsdl, train_args  # noqa: E402
from hydra_plugins.cmsdl_optuna_sweeper._search_space import parse_search_space  # noqa: E402
from hydra_plugins.cmsdl_optuna_sweeper.optuna_sweeper import objective_values, open_storage  # noqa: E402


def test_params_in_hydra_sweep_syntax_become_optuna_distributions() -> None:
    space = parse_search_space({
        "lr": "tag(log, interval(0.0001, 0.01))", "dropout": "interval(0.0, 0.3)", "width": "tag(int, interval(8, 64))",
        "batch_size": "choice(64, 128, 256)", "layers": "range(1, 10, 3)", "down": "range(10, 1, -3)",
        "activation": "choice(relu, gelu)", "epochs": "5"}, [])
    assert space.distributions == {
        "lr": FloatDistribution(0.0001, 0.01, log=True), "dropout": FloatDistribution(0.0, 0.3),
        "width": IntDistribution(8, 64), "batch_size": CategoricalDistribution([64, 128, 256]),
        "layers": IntDistribution(1, 7, step=3),  # Hydra's range excludes its stop: 1, 4, 7
        "down": IntDistribution(4, 10, step=3), "activation": CategoricalDistribution(["relu", "gelu"])}
    assert space.fixed == ["epochs=5"]


def test_the_command_line_overrides_params_and_its_sweeps_join_the_search() -> None:
    space = parse_search_space({"lr": "interval(0.1, 0.2)", "epochs": "5"},
                               ["experiment=x", "lr=0.5", "epochs=choice(1, 2)", "+extra=1"])
    assert space.distributions == {"epochs": CategoricalDistribution([1, 2])}
    assert space.fixed == ["experiment=x", "lr=0.5", "+extra=1"]


@pytest.mark.parametrize(("expression", "expected"), [
    ("interval(0.3, 0.1)", "interval(0.3, 0.1) must have low < high"),
    ("tag(log, interval(0.0, 0.1))", "low > 0 (log scale)"),
    ("range(5, 1)", "is empty"),
    ("interval(0.1", "hydra.sweeper.params"),
])
def test_a_bad_sweep_expression_is_one_line_naming_the_key(expression: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="hydra.sweeper.params") as raised:
        parse_search_space({"model.lr": expression}, [])
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def job_return(value: object, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    job = JobReturn()
    job.status, job.return_value = status, value
    return job


def test_a_trial_counts_only_a_finite_number_returned_by_a_completed_job() -> None:
    assert objective_values(job_return(0.25), 1) == ([0.25], "")
    assert objective_values(job_return([0.25, 0.5]), 2) == ([0.25, 0.5], "")
    assert objective_values(job_return("ConfigError: model.optimizer.lr"), 1)[0] is None  # a point that failed
    assert objective_values(job_return(float("nan")), 1)[0] is None
    assert objective_values(job_return(None), 1)[0] is None
    assert objective_values(job_return(RuntimeError("boom"), JobStatus.FAILED), 1) == (None, "the job failed: boom")


def test_storage_is_a_file_in_the_sweep_dir_sqlite_or_journal(tmp_path: Path) -> None:
    assert open_storage("optuna.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    journal = open_storage("optuna.journal", tmp_path)
    study = optuna.create_study(study_name="s", storage=journal)
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 0.5)
    assert (tmp_path / "optuna.journal").is_file()
    assert len(optuna.load_study(study_name="s", storage=open_storage("optuna.journal", tmp_path)).trials) == 1
    assert open_storage(None, tmp_path) is None
    with pytest.raises(ConfigError, match="hydra.sweeper.storage: expected"):
        open_storage("optuna.txt", tmp_path)


def search_args(workflows_file: Path, log_dir: Path, *extra: str) -> list[str]:
    return train_args(workflows_file, log_dir, "hparams_search=workflow_optuna", "trainer.max_epochs=1", "test=false",
                      "hydra.sweeper.sampler.n_startup_trials=1", *extra)


def wait_for(path: Path, proc: subprocess.Popen, output: Path, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, f"the search ended before {path} appeared:\n{output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_search_continues_with_its_trials_and_runs_no_finished_trial_twice(
        tmp_path: Path, workflows_file: Path) -> None:
    logs = tmp_path / "logs"
    args = search_args(workflows_file, logs, "run_name=search", "hydra.sweeper.n_trials=3")
    sweep = logs / "train" / "multiruns" / "search"
    with (tmp_path / "killed.log").open("w") as output:
        proc = subprocess.Popen([sys.executable, "-m", "cmsdl.cli", *args], cwd=tmp_path, stdout=output, stderr=output)
        try:
            wait_for(sweep / "2" / ".hydra", proc, tmp_path / "killed.log")  # trials 0, 1 told; trial 2 started
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    killed = optuna.load_study(study_name="search", storage=storage).trials
    assert [t.state for t in killed] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    finished_at = {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)}

    resumed = run_cmsdl(*search_args(workflows_file, logs, "resume=true", "hydra.sweeper.n_trials=4"), cwd=tmp_path)
    assert [p.name for p in (logs / "train" / "multiruns").iterdir()] == ["search"], "the same sweep dir, found again"
    assert "resuming 1 trial(s) that were running when the search stopped: 2" in resumed.stderr + resumed.stdout
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    assert trials[2].params == killed[2].params, "the interrupted trial ran again with its own params"
    assert {n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)} == finished_at
    for trial in trials:  # trial number = job number = point directory, with that trial's params
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())["metrics"]
        assert metrics["val/loss"] == pytest.approx(trial.value)
        overrides = (sweep / str(trial.number) / ".hydra" / "overrides.yaml").read_text()
        assert f"model.optimizer.lr={trial.params['model.optimizer.lr']}" in overrides
    with (sweep / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["point"], row["status"]) for row in rows] == [(str(n), "finished") for n in range(4)]

    again = run_cmsdl(*search_args(workflows_file, logs, "run_name=search", "hydra.sweeper.n_trials=4"), cwd=tmp_path,
                      check=False)
    assert again.returncode == 2 and "already holds the Optuna study 'search' (4 trials)" in again.stderr
    assert "pass resume=true" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_a_failing_trial_is_marked_failed_and_the_search_goes_on(tmp_path: Path, workflows_file: Path) -> None:
    proc = run_cmsdl(*search_args(workflows_file, tmp_path / "logs", "run_name=search", "hydra.sweeper.n_trials=2",
                                  "model.optimizer.lr=choice(-1.0, -2.0)"), cwd=tmp_path, check=False)
    sweep = tmp_path / "logs" / "train" / "multiruns" / "search"
    trials = optuna.load_study(study_name="search", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert proc.returncode == 1 and "2 of 2 sweep points failed" in proc.stderr
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["0", "failed"], ["1", "failed"]]
