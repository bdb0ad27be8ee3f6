"""A history of workflow error snapshots: one workflow document per day or week, ordered by date.

``input`` names one document, a directory (every ``*.json`` in it) or a glob (``'data/history/*.json'``).
Each snapshot's date is the first ``YYYY-MM-DD`` (or ``YYYYMMDD``) in its file name, e.g.
``workflows-2026-01-05.json``; a file whose name holds no date must hold one in the document, as a top-level
``"date": "2026-01-05"`` next to ``"workflows"`` (``cmsdl simulate-workflows snapshots=N`` writes both). Two
snapshots with the same date, or one with no date, are an error. A workflow seen in several snapshots of a window
counts once, with its latest record. Imports no torch.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cmsdl.errors import ConfigError, InputFormatError, shown
from cmsdl.features.workflows.records import Workflow, load_workflows
from cmsdl.io import loads_json, read_input_text
from cmsdl.io.root import has_magic, match_files

_NAME_DATE = re.compile(r"(?<![0-9])([0-9]{4})-?([0-9]{2})-?([0-9]{2})(?![0-9])")


@dataclass(frozen=True)
class Snapshot:
    """The workflows of one snapshot file and the date they were recorded."""

    day: date
    path: Path
    workflows: list[Workflow]


def snapshot_paths(spec: str | Path) -> list[Path]:
    """The files named by `spec`: one file, the *.json files of a directory, or the matches of a glob (through
    cmsdl.io.root.match_files, so a glob that matches nothing is the same error as for every other input)."""
    text = str(spec)
    if Path(text).is_dir():
        text = str(Path(glob.escape(text)) / "*.json")
    elif not has_magic(text):
        return [Path(text)]
    try:
        paths = [Path(p) for p in match_files(text) if Path(p).is_file()]
    except InputFormatError as err:
        raise InputFormatError(f"input: {err}") from None
    if not paths:
        raise InputFormatError(f"input: {text} matches only directories, expected workflow snapshot (*.json) files")
    return paths


def date_in_name(path: Path) -> date | None:
    """The first valid YYYY-MM-DD or YYYYMMDD date in the file name, if any."""
    for match in _NAME_DATE.finditer(path.name):
        try:
            return date(*(int(g) for g in match.groups()))
        except ValueError:
            continue
    return None


def date_in_document(path: Path) -> date:
    """The document's top-level "date" (YYYY-MM-DD); an error naming the file when it is missing or malformed."""
    doc = loads_json(read_input_text(path, "workflow snapshot"))
    value = doc.get("date") if isinstance(doc, dict) else None
    try:
        return date.fromisoformat(value) if isinstance(value, str) else _no_date(path, value)
    except ValueError:
        return _no_date(path, value)


def _no_date(path: Path, value: object) -> date:
    raise InputFormatError(f"{path}: snapshot has no date: expected YYYY-MM-DD in the file name or a top-level "
                           f"\"date\": \"YYYY-MM-DD\" in the document, got {shown(value)}")


def load_snapshots(spec: str | Path) -> list[Snapshot]:
    """Every snapshot named by `spec`, oldest first."""
    snapshots = []
    for path in snapshot_paths(spec):
        workflows = load_workflows(path)
        snapshots.append(Snapshot(date_in_name(path) or date_in_document(path), path, workflows))
    snapshots.sort(key=lambda s: s.day)
    for before, after in zip(snapshots, snapshots[1:]):
        if before.day == after.day:
            raise InputFormatError(f"input: {before.path} and {after.path} are both snapshots of {after.day}; "
                                   "expected one snapshot per date")
    return snapshots


def check_history(history: object) -> int | None:
    """`history`: null (each snapshot alone) or the number of snapshots per fit (at least 1)."""
    if history is None:
        return None
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ConfigError(f"history: got {history!r}, expected null or the number of past snapshots per fit (>= 1)")
    return history


def window(snapshots: Sequence[Snapshot], end: int, history: int) -> list[Workflow]:
    """The workflows of snapshots end-history+1 .. end, each workflow once (its latest record), oldest first."""
    latest: dict[str, Workflow] = {}
    for snapshot in snapshots[max(0, end - history + 1): end + 1]:
        for wf in snapshot.workflows:
            latest.pop(wf.name, None)
            latest[wf.name] = wf
    return list(latest.values())
