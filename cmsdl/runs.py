"""Run directories: naming, finding the run to resume, and the config resolvers that use them.

``run_name`` defaults to a timestamp (under torchrun: the launcher's start, the same for all its ranks). With
``resume=true`` it is the unfinished run (no metrics.json) under the same task directory whose last.ckpt was
written last, among those started with the same command-line overrides (``resume`` and ``run_name`` aside), so the
same command plus ``resume=true`` continues in the same directory. Saved overrides are read as plain YAML text.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from cmsdl.errors import ConfigError

log = logging.getLogger(__name__)

LAST_CKPT = Path("checkpoints") / "last.ckpt"
_IGNORED_OVERRIDES = ("resume=", "run_name=", "hydra.", "+hydra.")


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "1"))


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(_IGNORED_OVERRIDES))


def _current_overrides(root: Any = None) -> tuple[str, list[str]]:
    """The Hydra mode ('RUN' or 'MULTIRUN') and this command's overrides, read from the config being composed
    (`root`) or, where that lacks them, from HydraConfig."""
    hydra_node = root.get("hydra") if root is not None else None
    if hydra_node is not None and hydra_node.get("overrides") is not None:
        mode = hydra_node.get("mode") or "RUN"
        return str(mode).split(".")[-1], _comparable([str(o) for o in hydra_node.overrides.task])
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return str(hc.mode).split(".")[-1], _comparable(list(hc.overrides.task))


MAX_SAVED_YAML_BYTES = 4 << 20  # Hydra's saved overrides are a few hundred bytes; anything this large is not one


def _read_yaml_text(path: Path) -> Any:
    """A saved YAML file as plain data: `${...}` in saved overrides stays text, never resolved; unreadable, oversized
    or malformed files count as absent."""
    try:
        if path.stat().st_size > MAX_SAVED_YAML_BYTES:
            return None
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None


def _saved_overrides(run_dir: Path, mode: str) -> list[str] | None:
    if mode == "MULTIRUN":
        saved = _read_yaml_text(run_dir / "multirun.yaml")
        task = saved.get("hydra", {}).get("overrides", {}).get("task") if isinstance(saved, dict) else None
    else:
        task = _read_yaml_text(run_dir / ".hydra" / "overrides.yaml")
    return _comparable([str(o) for o in task]) if isinstance(task, list) else None


def _checkpoints(run_dir: Path, mode: str) -> list[Path]:
    return list(run_dir.glob(f"*/{LAST_CKPT}")) if mode == "MULTIRUN" else [p for p in [run_dir / LAST_CKPT] if p.is_file()]


def is_finished(run_dir: Path, mode: str = "RUN") -> bool:
    """A run finished when it wrote metrics.json; a sweep when its summary.csv lists every point as finished. An
    Optuna search (study.json) never is: resume=true continues it, up to the n_trials of the command run again."""
    if mode == "MULTIRUN":
        from cmsdl.sweeps import STUDY_FILE, read_summary

        if (run_dir / STUDY_FILE).is_file():
            return False
        rows = read_summary(run_dir)
        return bool(rows) and all(row.get("status") == "finished" for row in rows)
    return all((ckpt.parent.parent / "metrics.json").is_file() for ckpt in _checkpoints(run_dir, mode))


def _last_activity(run_dir: Path, mode: str) -> float | None:
    """When a resumable run was last active (its newest last.ckpt; a sweep: also its start), None for none."""
    times = [c.stat().st_mtime for c in _checkpoints(run_dir, mode)]
    if mode == "MULTIRUN" and (run_dir / "multirun.yaml").is_file():
        times.append((run_dir / "multirun.yaml").stat().st_mtime)
    return max(times, default=None)


def find_resumable_run(task_dir: Path, mode: str, overrides: list[str]) -> str | None:
    """Name of the newest unfinished run in `task_dir` started with `overrides` that has a last.ckpt (a sweep: any
    unfinished sweep of those overrides, finished points and all), or None.

    Newest means the latest last.ckpt write (or sweep start), not the name: run names need not be timestamps.
    """
    runs = task_dir / ("multiruns" if mode == "MULTIRUN" else "runs")
    if not runs.is_dir():
        return None
    unfinished = [(active, run_dir.name) for run_dir in runs.iterdir()
                  if run_dir.is_dir() and (active := _last_activity(run_dir, mode)) is not None
                  and _saved_overrides(run_dir, mode) == overrides and not is_finished(run_dir, mode)]
    return max(unfinished)[1] if unfinished else None


def run_name(task_dir: str, resume: Any, *, _root_: Any = None) -> str:
    """The run directory name: an earlier run to resume (resume=true), else a new timestamp."""
    if is_true(resume):
        try:
            mode, overrides = _current_overrides(_root_)
        except ValueError:
            mode, overrides = "RUN", []
        found = find_resumable_run(Path(task_dir), mode, overrides)
        if found:
            return found
    return launch_time().strftime("%Y-%m-%d_%H-%M-%S")


def cached_run_name(task_dir: str, resume: Any, *, _root_: Any) -> str:
    """`run_name`, computed once per config and kept in the config's resolver cache, which Hydra copies into every
    job of a sweep (so all jobs and the sweep directory agree on one name)."""
    cache = OmegaConf.get_cache(_root_).setdefault("cmsdl_run_name", {})
    key = f"{task_dir},{resume}"
    if key not in cache:
        cache[key] = run_name(task_dir, resume, _root_=_root_)
    return cache[key]


def launch_time() -> datetime:
    """When the run was launched: under torchrun the launcher's start time, which all its local ranks share
    (so they agree on one run directory), else now."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        started = process_start(os.getppid())
        if started is not None:
            return started
    return datetime.now()


def process_start(pid: int) -> datetime | None:
    """Start time of a process from /proc (Linux); None where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return datetime.fromtimestamp(boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def register_resolvers() -> None:
    """Make cmsdl's resolvers available to configs; cached, so every sweep job sees the same value."""
    if not OmegaConf.has_resolver("cmsdl_run_name"):
        OmegaConf.register_new_resolver("cmsdl_run_name", cached_run_name)
    if not OmegaConf.has_resolver("cmsdl_cwd"):
        OmegaConf.register_new_resolver("cmsdl_cwd", os.getcwd, use_cache=True)


def checkpoint_to_resume(resume: Any, output_dir: str | Path) -> str | None:
    """The checkpoint a run continues from: an explicit path, <output_dir>/checkpoints/last.ckpt, or None.

    Starting fresh in a directory that already holds a run is refused, so that no run is overwritten.
    """
    last = Path(output_dir) / LAST_CKPT
    if resume is None or resume is False or (isinstance(resume, str) and resume.lower() in ("false", "no", "0", "")):
        if last.is_file():
            raise ConfigError(
                f"run directory {output_dir} already holds a run ({LAST_CKPT}); "
                "pass resume=true to continue it, or another run_name for a new run"
            )
        return None
    if not is_true(resume):
        path = Path(str(resume))
        if not path.is_file():
            raise ConfigError(f"resume: checkpoint {path} does not exist (expected true, false or a .ckpt path)")
        return str(path)
    if last.is_file():
        return str(last)
    log.warning("resume=true, but %s; starting a new run", why_nothing_to_resume(Path(output_dir)))
    return None


def finished_sweep_point(resume: Any, output_dir: str | Path) -> dict[str, Any] | None:
    """In a sweep run again with resume=true, the metrics.json of a point that finished earlier (it is skipped)."""
    from cmsdl.config import in_sweep

    path = Path(output_dir) / "metrics.json"
    if not (is_true(resume) and path.is_file() and in_sweep()):
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("metrics"), dict) else None


def why_nothing_to_resume(output_dir: Path) -> str:
    """One line for a resume=true that starts fresh: which runs of the same command finished, or which others exist."""
    overrides = _saved_overrides(output_dir, "RUN")
    runs = [d for d in output_dir.parent.iterdir() if d != output_dir and (d / LAST_CKPT).is_file()]
    finished = sorted((d for d in runs if overrides is not None and _saved_overrides(d, "RUN") == overrides
                       and is_finished(d)), key=lambda d: (d / LAST_CKPT).stat().st_mtime)
    if finished:
        return (f"the newest run of this command line, {finished[-1].name}, has finished (metrics.json): continue it "
                f"with run_name={finished[-1].name} resume=true")
    names = sorted(d.name for d in runs)
    hint = f" (runs with a last.ckpt: {', '.join(names[-3:])}; continue one with run_name=<name>)" if names else ""
    return "no earlier unfinished run of this command line has a last.ckpt" + hint
