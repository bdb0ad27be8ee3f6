"""`hydra/sweeper=cmsdl_optuna`: an Optuna (>= 4) search over `hydra.sweeper.params`, launching trials in batches of
n_jobs through the configured launcher (basic or k8s) and optimising what each job returns.

The study lives in the sweep directory (SQLite through Optuna's RDB storage, or a journal file), so that the same
command with resume=true continues a killed search: finished trials count toward n_trials, and trials left RUNNING
by the killed search run again under their own number, in their own directory (from their last.ckpt), with their own
params. Trial number = Hydra job number = point directory. Optuna is imported only when a search runs.
"""

from __future__ import annotations

import logging
import math
import sys
from itertools import groupby
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.io import write_json
from cmsdl.sweeps import STUDY_FILE

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
JOURNAL_SUFFIXES = (".journal", ".log")
Point = tuple[int, dict[str, Any]]  # a trial's number and params


class OptunaSweeper(Sweeper):
    """Asks Optuna for trials, runs each as a Hydra job and tells Optuna its return value (or FAIL)."""

    def __init__(self, direction: Any = "minimize", n_trials: int = 20, n_jobs: int = 1, sampler: Any = None,
                 storage: str | None = "optuna.db", study_name: str | None = None, params: Any = None) -> None:
        self.directions = [str(d) for d in direction] if isinstance(direction, (list, ListConfig)) else [str(direction)]
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.sampler_config, self.storage, self.study_name = sampler, storage, study_name
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.search(arguments)
        except CmsdlError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def search(self, arguments: list[str]) -> None:
        """Open (or continue) the study in the sweep dir, rerun its interrupted trials, then ask for the rest."""
        from hydra_plugins.cmsdl_optuna_sweeper._search_space import parse_search_space

        space = parse_search_space(self.params, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        storage = open_storage(self.storage, sweep_dir)
        name = self.study_name or sweep_dir.name
        earlier = count_earlier_trials(storage, name)
        refuse_overwriting_a_study(earlier, self.config, sweep_dir, name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = create_study(storage, name, self.directions, make_sampler(self.sampler_config, earlier))
        write_json(sweep_dir / STUDY_FILE, {"study_name": name, "storage": describe_storage(self.storage, sweep_dir),
                                            "directions": self.directions})
        self.fixed = space.fixed
        self.rerun_interrupted_trials(study)
        while (left := self.n_trials - counted_trials(study)) > 0:
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, left))]
            self.run_points(study, [(trial.number, trial.params) for trial in trials])
        write_results(study, sweep_dir / RESULTS_FILE)

    def rerun_interrupted_trials(self, study: Any) -> None:
        """Trials a killed search left RUNNING: each runs again under its own number (its directory, its last.ckpt)."""
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            log.warning("resuming %d trial(s) that were running when the search stopped: %s", len(running),
                        ", ".join(str(t.number) for t in running))
        for start in range(0, len(running), self.n_jobs):
            self.run_points(study, [(t.number, dict(t.params)) for t in running[start:start + self.n_jobs]])

    def run_points(self, study: Any, points: list[Point]) -> None:
        """Launch the points (job number = trial number, so consecutive numbers go in one launch) and tell Optuna."""
        for _, group in groupby(enumerate(points), key=lambda item: item[1][0] - item[0]):
            batch = [point for _, point in group]
            overrides = [trial_overrides(self.fixed, params) for _, params in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=batch[0][0])
            for (number, _), job_return in zip(batch, returns):
                tell(study, number, job_return, len(self.directions))


def trial_overrides(fixed: list[str], params: dict[str, Any]) -> list[str]:
    return [*fixed, *(f"{key}={value}" for key, value in params.items())]


def open_storage(storage: str | None, sweep_dir: Path) -> Any:
    """Optuna storage of `hydra.sweeper.storage`: a file in the sweep dir (*.db: SQLite, *.journal: journal file),
    an RDB URL, or None (in memory)."""
    if storage is None:
        return None
    if "://" in storage:
        return storage
    path = sweep_dir / storage
    if path.suffix in SQLITE_SUFFIXES:
        return f"sqlite:///{path.resolve()}"
    if path.suffix in JOURNAL_SUFFIXES:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        sweep_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    raise ConfigError(f"hydra.sweeper.storage: expected a file name ending {'/'.join(SQLITE_SUFFIXES)} (SQLite) or "
                      f"{'/'.join(JOURNAL_SUFFIXES)} (journal file), an RDB URL or null, got {storage!r}")


def describe_storage(storage: str | None, sweep_dir: Path) -> str | None:
    return storage if storage is None or "://" in storage else str((sweep_dir / storage).resolve())


def count_earlier_trials(storage: Any, name: str) -> int:
    """Trials the storage already holds for study `name` (0 for a new study or an in-memory one)."""
    if storage is None or (isinstance(storage, str) and storage.startswith("sqlite:///")
                           and not Path(storage.removeprefix("sqlite:///")).is_file()):
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        return 0


def refuse_overwriting_a_study(earlier: int, config: DictConfig, sweep_dir: Path, name: str) -> None:
    from cmsdl.runs import is_true

    if earlier and not is_true(config.get("resume")):
        raise ConfigError(f"sweep directory {sweep_dir} already holds the Optuna study {name!r} ({earlier} trials): "
                          "pass resume=true to continue it, or another run_name for a new search")


def make_sampler(config: Any, earlier: int) -> Any:
    """The configured sampler; a resumed search shifts its seed by the trials already run, so that its random
    startup trials are not those of the first run again."""
    if config is None:
        return None
    settings = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
    if earlier and settings.get("seed") is not None:
        settings["seed"] = int(settings["seed"]) + earlier
    return instantiate(settings)


def create_study(storage: Any, name: str, directions: list[str], sampler: Any) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                   load_if_exists=True)
    except ValueError as err:
        raise ConfigError(f"hydra.sweeper.direction: {err}") from None


def counted_trials(study: Any) -> int:
    """Trials that count toward n_trials: all but those enqueued and not yet run."""
    from optuna.trial import TrialState

    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def objective_values(job_return: JobReturn, n_objectives: int) -> tuple[list[float] | None, str]:
    """A job's return value as the trial's objective values, or None and why it is not one."""
    if job_return.status != JobStatus.COMPLETED:
        return None, f"the job failed: {job_return._return_value}"  # reading .return_value would raise
    value = job_return.return_value
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None, f"it returned {value!r}, not a number"
    if len(values) != n_objectives or not all(math.isfinite(v) for v in values):
        return None, f"it returned {value!r}, not {n_objectives} finite number(s)"
    return values, ""


def tell(study: Any, number: int, job_return: JobReturn, n_objectives: int) -> None:
    from optuna.trial import TrialState

    values, why = objective_values(job_return, n_objectives)
    if values is None:
        log.warning("trial %d failed (%s); the search goes on", number, why)
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, values)


def write_results(study: Any, path: Path) -> None:
    """optimization_results.yaml: the best trial (one objective) or the Pareto front (several)."""
    finished = study.best_trials if any(t.values for t in study.get_trials(deepcopy=False)) else []
    if not finished:
        log.warning("no trial of study %r finished: %s not written", study.study_name, path)
        return
    if len(study.directions) == 1:
        best = study.best_trial
        results = {"name": study.study_name, "best_trial": best.number, "best_params": best.params,
                   "best_value": best.value}
    else:
        results = {"name": study.study_name, "solutions": [
            {"trial": t.number, "params": t.params, "values": t.values} for t in finished]}
    OmegaConf.save(OmegaConf.create(results), path)
    log.info("best trial(s) of study %r: %s", study.study_name, path)
