"""Run directories: naming, finding the run to resume, and the config resolvers that use them.

``run_name`` defaults to a timestamp (under torchrun: the launcher's start, the same for all its ranks). With ``resume=true`` it is the newest earlier run under the same task
directory that was started with the same command-line overrides (``resume`` and ``run_name`` aside) and left
a ``checkpoints/last.ckpt``, so the same command plus ``resume=true`` continues in the same directory.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cmsdl.errors import ConfigError

log = logging.getLogger(__name__)

LAST_CKPT = Path("checkpoints") / "last.ckpt"
_IGNORED_OVERRIDES = ("resume=", "run_name=", "hydra.", "+hydra.")


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "1"))


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(_IGNORED_OVERRIDES))


def _current_overrides() -> tuple[str, list[str]]:
    """The Hydra mode ('RUN' or 'MULTIRUN') and this command's overrides."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return str(hc.mode).split(".")[-1], _comparable(list(hc.overrides.task))


def _saved_overrides(run_dir: Path, mode: str) -> list[str] | None:
    if mode == "MULTIRUN":
        saved = run_dir / "multirun.yaml"
        if not saved.is_file():
            return None
        return _comparable(list(OmegaConf.load(saved).hydra.overrides.task))
    saved = run_dir / ".hydra" / "overrides.yaml"
    return _comparable(list(OmegaConf.load(saved))) if saved.is_file() else None


def _has_checkpoint(run_dir: Path, mode: str) -> bool:
    if mode == "MULTIRUN":
        return any(run_dir.glob(f"*/{LAST_CKPT}"))
    return (run_dir / LAST_CKPT).is_file()


def find_resumable_run(task_dir: Path, mode: str, overrides: list[str]) -> str | None:
    """Name of the newest run in `task_dir` started with `overrides` that has a last.ckpt, or None."""
    runs = task_dir / ("multiruns" if mode == "MULTIRUN" else "runs")
    if not runs.is_dir():
        return None
    for run_dir in sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.name, reverse=True):
        if _has_checkpoint(run_dir, mode) and _saved_overrides(run_dir, mode) == overrides:
            return run_dir.name
    return None


def run_name(task_dir: str, resume: Any) -> str:
    """The run directory name: an earlier run to resume (resume=true), else a new timestamp."""
    if is_true(resume):
        try:
            mode, overrides = _current_overrides()
        except ValueError:
            mode, overrides = "RUN", []
        found = find_resumable_run(Path(task_dir), mode, overrides)
        if found:
            return found
    return launch_time().strftime("%Y-%m-%d_%H-%M-%S")


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
        OmegaConf.register_new_resolver("cmsdl_run_name", run_name, use_cache=True)


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
    others = sorted(p.parent.parent.name for p in Path(output_dir).parent.glob(f"*/{LAST_CKPT}"))
    hint = f"; runs with a last.ckpt: {', '.join(others[-3:])} (continue one with run_name=<name>)" if others else ""
    log.warning("resume=true but no earlier run of this command has a last.ckpt: starting fresh%s", hint)
    return None
