"""Sweep summaries: every `-m` sweep writes <sweep dir>/summary.csv (one row per point) and prints it as a table.

`SweepSummary` is a Hydra callback (configs/hydra/default.yaml): a point that fails is recorded in its directory
(error.json) and handed to the sweeper as a completed job, so that the other points still run; at the end of the sweep
the points are read back from their directories, whichever launcher ran them. Imports no torch or Lightning.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cmsdl.io import atomic_write, write_json

log = logging.getLogger(__name__)
SUMMARY_FILE = "summary.csv"
ERROR_FILE = "error.json"  # a failed point: {"error": "<type>: <message>", "traceback": "..."}
STUDY_FILE = "study.json"  # an Optuna search's study: {"study_name", "storage", "directions"} (cmsdl_optuna sweeper)
POINT_FILE = "point.json"  # written by launchers that run points elsewhere (k8s): {"overrides": [...], "job": ...}
FIXED_COLUMNS = ("point", "status", "overrides", "best_epoch")
LAST_COLUMNS = ("error", "run_dir")
METRIC_PREFIXES = ("val/", "test/")


def is_multirun(config: DictConfig) -> bool:
    return str(config.hydra.get("mode")).endswith("MULTIRUN")


def error_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


class SweepSummary(Callback):
    """Keeps a sweep going past a failed point and writes <sweep dir>/summary.csv at its end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Register hydra/launcher=k8s and hydra/sweeper=cmsdl_optuna before Hydra builds the sweeper: its plugin scan
        misses the plugins of an editable install, and `cmsdl train` imports its training code only inside the job."""
        import hydra_plugins.cmsdl_k8s_launcher  # noqa: F401
        import hydra_plugins.cmsdl_optuna_sweeper  # noqa: F401

        refuse_resuming_a_study_without_storage(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_multirun(config):  # a point run again (resume=true) starts without its earlier error
            (Path(str(config.hydra.runtime.output_dir)) / ERROR_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or not is_multirun(config):
            return
        record_failure(job_return, Path(str(config.hydra.runtime.output_dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = write_summary(sweep_dir)
        if not rows:
            return
        print(format_table(rows), flush=True)
        print(f"sweep summary: {sweep_dir / SUMMARY_FILE}", flush=True)
        failed = [row for row in rows if row["status"] == "failed"]
        if failed:
            first = f"{failed[0]['point']}: {failed[0]['error']}"
            print(f"error: {len(failed)} of {len(rows)} sweep points failed (point {first}); see "
                  f"{sweep_dir / SUMMARY_FILE}; the same command with resume=true runs them again", file=sys.stderr)
            raise SystemExit(1)


def refuse_resuming_a_study_without_storage(config: DictConfig) -> None:
    """resume=true of an Optuna search whose study is kept in memory only (hydra.sweeper.storage: null): its trials
    would be asked anew and land in the numbered directories of other trials, so the search is refused with one line."""
    from cmsdl.runs import is_true

    sweeper = config.hydra.get("sweeper") or {}
    if is_true(config.get("resume")) and "optuna" in str(sweeper.get("_target_", "")) and not sweeper.get("storage"):
        print("error: resume=true: this Optuna search keeps its study in memory (hydra.sweeper.storage is null), so "
              "it cannot be continued; start a new search without resume=true", file=sys.stderr)
        raise SystemExit(2)


def record_failure(job_return: JobReturn, point_dir: Path) -> None:
    """Note a failed point's error in <point dir>/error.json and hand the sweeper the error line as the point's
    result, so that the sweep goes on (the Optuna sweeper marks a trial whose result is not a number as failed and
    goes on)."""
    error = job_return._return_value  # reading .return_value would raise it
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    write_json(point_dir / ERROR_FILE, {"error": error_line(error), "traceback": trace})
    log.error("sweep point %s failed: %s (traceback in %s)", point_dir.name, error_line(error), point_dir / ERROR_FILE)
    job_return.status, job_return.return_value = JobStatus.COMPLETED, error_line(error)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def point_overrides(point_dir: Path) -> list[str]:
    """The point's command-line overrides, as Hydra saved them (or as a launcher recorded them in point.json)."""
    try:
        saved = yaml.safe_load((point_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        saved = (read_json(point_dir / POINT_FILE) or {}).get("overrides")
    return [str(o) for o in saved] if isinstance(saved, list) else []


def best_epoch(best_checkpoint: Any) -> str:
    """The epoch of checkpoints/epoch_NNN.ckpt, '' where there is none."""
    found = re.search(r"epoch_(\d+)", str(best_checkpoint or ""))
    return str(int(found.group(1))) if found else ""


def point_status(point_dir: Path, metrics_json: dict[str, Any] | None) -> str:
    if (point_dir / ERROR_FILE).is_file() and metrics_json is None:
        return "failed"
    if metrics_json is not None:
        return "failed" if metrics_json.get("succeeded") is False else "finished"
    if (point_dir / "checkpoints" / "last.ckpt").is_file():
        return "unfinished"
    return "submitted" if (point_dir / POINT_FILE).is_file() else "not finished"


def point_row(point_dir: Path) -> dict[str, str]:
    """One summary row: status, overrides, best epoch, val/test metrics, error and run directory of a point."""
    metrics_json = read_json(point_dir / "metrics.json")
    status = point_status(point_dir, metrics_json)
    metrics = (metrics_json or {}).get("metrics") or {}
    row = {"point": point_dir.name, "status": status, "overrides": " ".join(point_overrides(point_dir)),
           "best_epoch": best_epoch((metrics_json or {}).get("best_checkpoint"))}
    row |= {key: f"{value:.6g}" for key, value in sorted(metrics.items())
            if key.startswith(METRIC_PREFIXES) and isinstance(value, (int, float))}
    error = (read_json(point_dir / ERROR_FILE) or {}).get("error", "") if status == "failed" else ""
    if status == "failed" and not error and metrics_json is not None:
        error = "job did not succeed: " + ", ".join(map(str, metrics_json.get("conditions") or []))
    return row | {"error": str(error), "run_dir": str(point_dir)}


def sweep_points(sweep_dir: Path) -> list[Path]:
    """The numbered point directories of a sweep, in number order."""
    return sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))


def summary_columns(rows: list[dict[str, str]]) -> list[str]:
    metrics = sorted({key for row in rows for key in row} - set(FIXED_COLUMNS) - set(LAST_COLUMNS))
    return [*FIXED_COLUMNS, *metrics, *LAST_COLUMNS]


def write_summary(sweep_dir: Path) -> list[dict[str, str]]:
    """<sweep dir>/summary.csv from the point directories; returns its rows (none for a sweep without points)."""
    if not sweep_dir.is_dir():
        return []
    rows = [point_row(point) for point in sweep_points(sweep_dir)]
    if rows:
        with atomic_write(sweep_dir / SUMMARY_FILE, newline="") as handle:
            writer = csv.DictWriter(handle, summary_columns(rows), restval="")
            writer.writeheader()
            writer.writerows(rows)
    return rows


def read_summary(sweep_dir: Path) -> list[dict[str, str]] | None:
    try:
        with (sweep_dir / SUMMARY_FILE).open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return None


def varying_overrides(rows: list[dict[str, str]]) -> list[str]:
    """Each row's overrides less those that every point shares (the command line): what the sweep varies."""
    split = [row["overrides"].split(" ") if row["overrides"] else [] for row in rows]
    shared = set.intersection(*map(set, split)) if len(split) > 1 else set()
    return [" ".join(o for o in overrides if o not in shared) for overrides in split]


def format_table(rows: list[dict[str, str]], max_width: int = 60) -> str:
    """The summary as an aligned text table: the overrides that vary, long cells cut, run directories left to
    summary.csv."""
    columns = [c for c in summary_columns(rows) if c != "run_dir" and (c != "error" or any(r.get(c) for r in rows))]
    shown = [row | {"overrides": varied} for row, varied in zip(rows, varying_overrides(rows))]
    cells = [list(columns)] + [[str(row.get(c, ""))[:max_width] for c in columns] for row in shown]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells)
