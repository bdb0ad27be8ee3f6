"""The workflow error-handling data format: CMS workflows, their task errors per site, and the operator action.

One JSON document holds the workflows; this module reads and validates it. It imports no torch.

Example document (``cmsdl simulate-workflows`` writes this format)::

    {
      "format": "cmsdl-workflows/1",
      "workflows": [
        {
          "name": "pdmvserv_task_HIG-RunIIFall17wmLHEGS-01234__v1_T_171201_101010_5555",
          "action": "acdc",
          "tasks": [
            {
              "name": "/pdmvserv_task_HIG-RunIIFall17wmLHEGS-01234__v1_T_171201_101010_5555/GENSIM",
              "errors": {"50664": {"T1_US_FNAL": 12, "T2_CH_CERN": 3}, "-1": {"T2_US_MIT": 1}},
              "site_status": {"T1_US_FNAL": "good", "T2_CH_CERN": "bad"}
            }
          ]
        }
      ]
    }

- ``errors`` maps a CMS exit code (a string holding an integer, e.g. ``"50660"`` or ``"-1"``) to the number of
  failed jobs per site. Codes and counts fit in 64 bits; counts are non-negative integers.
- ``site_status`` gives each site's status when the errors were seen: ``good``, ``bad``, or ``unknown``.
  A site that is missing, ``null`` or ``unknown`` is treated as good, as in the seed study.
- ``action`` is what the operator did: one of :data:`ACTIONS`; it may be missing or ``null`` for workflows
  that are still to be handled (prediction and clustering need no action).
A bare list of workflows is accepted as the whole document too, and so is a UTF-8 byte-order mark before it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmsdl.errors import InputFormatError, shown
from cmsdl.io import loads_json, read_input_text

FORMAT = "cmsdl-workflows/1"
ACTIONS = ("acdc", "clone", "kill", "resubmit")
SITE_STATUSES = ("good", "bad", "unknown")
INT64_MAX = 2**63 - 1
_CODE = re.compile(r"-?[0-9]{1,19}")


@dataclass(frozen=True)
class ErrorCount:
    """Failed jobs of one task with one exit code at one site."""

    code: int
    site: str
    site_bad: bool
    count: int


@dataclass(frozen=True)
class Workflow:
    """One workflow: its name, operator action (None when unknown), and all its task errors."""

    name: str
    action: str | None
    errors: tuple[ErrorCount, ...]

    @property
    def n_failed_jobs(self) -> int:
        return sum(e.count for e in self.errors)


def load_workflows(path: str | Path) -> list[Workflow]:
    """Read and validate a workflow document; any problem raises one InputFormatError naming file, workflow, field."""
    path = Path(path)
    text = read_input_text(path, "workflow file")
    try:
        doc = loads_json(text)
    except json.JSONDecodeError as err:
        raise InputFormatError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except ValueError as err:
        raise InputFormatError(f"{path}: not usable JSON ({err})") from None
    return parse_workflows(doc, source=str(path))


def parse_workflows(doc: Any, source: str = "<workflows>") -> list[Workflow]:
    """Validate an already-decoded workflow document (a dict with 'workflows', or a list)."""
    records = doc.get("workflows") if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise InputFormatError(f"{source}: expected a JSON object with a 'workflows' list, or a list of workflows")
    return [_parse_workflow(rec, i, source) for i, rec in enumerate(records)]


def _parse_workflow(rec: Any, index: int, source: str) -> Workflow:
    where = f"{source}: workflow #{index}"
    if not isinstance(rec, dict):
        raise InputFormatError(f"{where}: expected an object, got {type(rec).__name__}")
    name = rec.get("name")
    if not isinstance(name, str) or not name:
        raise InputFormatError(f"{where}: field 'name' must be a non-empty string")
    where = f"{source}: workflow {shown(name)}"
    action = rec.get("action")
    if action is not None and action not in ACTIONS:
        raise InputFormatError(f"{where}: field 'action' is {shown(action)}, expected one of {', '.join(ACTIONS)} "
                               "or null")
    tasks = rec.get("tasks")
    if not isinstance(tasks, list):
        raise InputFormatError(f"{where}: field 'tasks' must be a list of tasks")
    errors: list[ErrorCount] = []
    for t, task in enumerate(tasks):
        errors.extend(_parse_task(task, f"{where}: tasks[{t}]"))
    return Workflow(name=name, action=action, errors=tuple(errors))


def _parse_task(task: Any, where: str) -> list[ErrorCount]:
    if not isinstance(task, dict):
        raise InputFormatError(f"{where}: expected an object with 'errors' and 'site_status'")
    if not isinstance(task.get("errors"), dict):
        raise InputFormatError(f"{where}: field 'errors' must map exit codes to {{site: count}}")
    status = task.get("site_status") or {}
    if not isinstance(status, dict):
        raise InputFormatError(f"{where}: field 'site_status' must map sites to good/bad/unknown")
    for site, value in status.items():
        if value is not None and value not in SITE_STATUSES:
            raise InputFormatError(f"{where}.site_status[{shown(site)}]: got {shown(value)}, expected good, bad, "
                                   "unknown or null")
    out = []
    for code_text, per_site in task["errors"].items():
        code = _parse_code(code_text, f"{where}.errors")
        if not isinstance(per_site, dict):
            raise InputFormatError(f"{where}.errors[{shown(code_text)}]: expected {{site: count}}, "
                                   f"got {shown(per_site)}")
        for site, count in per_site.items():
            field = f"{where}.errors[{shown(code_text)}][{shown(site)}]"
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InputFormatError(f"{field}: expected a non-negative integer count, got {shown(count)}")
            if count > INT64_MAX:
                raise InputFormatError(f"{field}: count {shown(count)} does not fit in 64 bits")
            if count:
                out.append(ErrorCount(code, site, status.get(site) == "bad", count))
    return out


def _parse_code(text: str, where: str) -> int:
    code = int(text) if _CODE.fullmatch(text) else None
    if code is None or not -INT64_MAX - 1 <= code <= INT64_MAX:
        raise InputFormatError(f"{where}: exit code {shown(text)} is not an integer of at most 64 bits")
    return code
