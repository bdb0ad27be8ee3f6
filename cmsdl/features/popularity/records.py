"""The dataset-popularity data format: weekly access records per dataset and site, their loader and labels.

One CSV file (format ``cmsdl-popularity/1``) with this header and one row per (dataset, week, site)::

    dataset,tier,week,site,naccess,nusers,cpu_hours,size_gb,nfiles,creation_week
    /ZeroBias/Run2016B-17Jul2018-v1/AOD,AOD,12,T2_US_MIT,37,5,81.2,2450.0,1210,9

- ``dataset`` is ``/Primary/Processed/TIER``; ``tier`` repeats its last part (AOD, AODSIM, MINIAOD, MINIAODSIM,
  USER, ...). ``week`` and ``creation_week`` are integer week numbers on one common scale (week 0 is the first
  week of the study); a dataset is never read before it is created.
- ``naccess`` (reads), ``nusers`` (distinct users) and ``nfiles`` are non-negative integers; ``cpu_hours`` and
  ``size_gb`` (dataset size, GB) are non-negative numbers. Integers fit in 64 bits, numbers in float32.

A UTF-8 byte-order mark before the header (spreadsheet exports) is ignored. Bad rows (wrong number of fields, a
field of the wrong type or out of range, a read before creation, a field over the csv module's size limit, a
truncated last line without its newline) are skipped and reported with their line numbers; the rest is used.
The weeks of a file may span at most MAX_WEEKS (the weekly totals are a dense grid). Imports no torch.
A dataset is *popular* in a week when its reads summed over sites pass the label rule (``naccess > 10`` by
default, or the seed's alternative ``log(nusers) > 2``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from cmsdl.errors import BadRecord, ConfigError, InputFormatError, describe_bad_records, shown
from cmsdl.io import atomic_write, read_input_text

log = logging.getLogger(__name__)

FORMAT = "cmsdl-popularity/1"
COLUMNS = ("dataset", "tier", "week", "site", "naccess", "nusers", "cpu_hours", "size_gb", "nfiles", "creation_week")
INT_COLUMNS = ("week", "naccess", "nusers", "nfiles", "creation_week")
FLOAT_COLUMNS = ("cpu_hours", "size_gb")
LABEL_METRICS = ("naccess", "nusers", "cpu_hours", "log_naccess", "log_nusers", "log_cpu_hours")
MAX_WEEKS = 5200  # a century: the widest span of weeks one file may cover
INT64_MAX = 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class PopularityTable:
    """Popularity records as numpy columns (one entry per row), plus the rows that were skipped."""

    columns: dict[str, np.ndarray]
    bad: list[BadRecord] = field(default_factory=list)
    source: str = "<records>"

    def __len__(self) -> int:
        return len(self.columns["week"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def bad_summary(self) -> str:
        """One line: how many rows were skipped and the first few line numbers with reasons."""
        return describe_bad_records(self.source, self.bad)


@dataclass(frozen=True)
class LabelRule:
    """popular iff metric > threshold; metric summed over the sites of a dataset-week (log_* takes its log)."""

    metric: str = "naccess"
    threshold: float = 10.0

    def __post_init__(self) -> None:
        if self.metric not in LABEL_METRICS:
            raise ConfigError(f"label.metric: got {self.metric!r}, expected one of {', '.join(LABEL_METRICS)}")

    def apply(self, naccess: np.ndarray, nusers: np.ndarray, cpu_hours: np.ndarray) -> np.ndarray:
        """Boolean popular flags for arrays of weekly totals."""
        base = self.metric.removeprefix("log_")
        values = {"naccess": naccess, "nusers": nusers, "cpu_hours": cpu_hours}[base].astype(np.float64)
        if self.metric.startswith("log_"):
            with np.errstate(divide="ignore"):
                values = np.log(values)
        return values > self.threshold

    def describe(self) -> str:
        name = f"log({self.metric[4:]})" if self.metric.startswith("log_") else self.metric
        return f"{name} > {self.threshold:g}"


def load_popularity(path: str | Path, max_bad_fraction: float = 0.5) -> PopularityTable:
    """Read a popularity CSV; bad rows are skipped and counted, a wrong header or mostly-bad file raises."""
    path = Path(path)
    text = read_input_text(path, "popularity file")
    table = parse_popularity(text, source=str(path))
    if len(table) == 0 or len(table.bad) > max_bad_fraction * (len(table) + len(table.bad)):
        raise InputFormatError(f"{table.bad_summary()}; only {len(table)} good records, expected mostly good ones")
    if table.bad:
        log.warning(table.bad_summary())
    return table


def parse_popularity(text: str, source: str = "<records>") -> PopularityTable:
    """Parse CSV text in the cmsdl-popularity/1 format (see the module docstring)."""
    lines = text.splitlines()
    if not lines or tuple(h.strip() for h in lines[0].split(",")) != COLUMNS:
        found = lines[0][:120] if lines else "an empty file"
        raise InputFormatError(f"{source}: line 1 must be the header {','.join(COLUMNS)} ({FORMAT}), got {found!r}")
    truncated = not text.endswith(("\n", "\r"))
    last_line = text.count("\n") + int(truncated)
    good: list[list[str]] = []
    good_lines: list[int] = []
    bad: list[BadRecord] = []
    for number, row in _csv_rows(text, bad):
        if number == 1 or not row:
            continue
        if truncated and number == last_line:
            bad.append(BadRecord(number, "truncated last line (no newline at end of file)"))
        elif len(row) != len(COLUMNS):
            bad.append(BadRecord(number, f"{len(row)} fields, expected {len(COLUMNS)}"))
        else:
            good.append(row)
            good_lines.append(number)
    columns, more_bad = _convert(good, good_lines)
    bad = sorted(bad + more_bad, key=lambda b: b.line)
    return PopularityTable(columns, bad, source)


def _csv_rows(text: str, bad: list[BadRecord]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV row; a row the csv module refuses (a field over its size limit) is
    added to `bad` and skipped."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            bad.append(BadRecord(reader.line_num, f"not readable as CSV ({err})"))
            continue
        yield reader.line_num, row


def _convert(rows: list[list[str]], lines: list[int]) -> tuple[dict[str, np.ndarray], list[BadRecord]]:
    """Typed columns of the rows that convert; the others become BadRecords."""
    values: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    bad: list[BadRecord] = []
    for row, line in zip(rows, lines):
        problem = _check_row(row)
        if problem:
            bad.append(BadRecord(line, problem))
            continue
        for name, value in zip(COLUMNS, row):
            values[name].append(value)
    columns = {
        "dataset": np.array(values["dataset"], dtype=object),
        "tier": np.array(values["tier"], dtype=object),
        "site": np.array(values["site"], dtype=object),
    }
    for name in INT_COLUMNS:
        columns[name] = np.array(values[name], dtype=np.int64)
    for name in FLOAT_COLUMNS:
        columns[name] = np.array(values[name], dtype=np.float64)
    return columns, bad


def _check_row(row: list[str]) -> str | None:
    """Why a row is bad, or None; converts in place (strings stay strings)."""
    record = dict(zip(COLUMNS, row))
    name = record["dataset"]
    if name.count("/") != 3 or not name.startswith("/") or not all(name.split("/")[1:]):
        return f"field 'dataset' is {shown(name)}, expected /Primary/Processed/TIER"
    if not record["site"]:
        return "field 'site' is empty"
    for key in INT_COLUMNS:
        text = record[key].strip()
        if not _INTEGER.fullmatch(text) or (text.startswith("-") and not key.endswith("week")):
            return f"field '{key}' is {shown(record[key])}, expected a non-negative integer"
        if len(text) > 20 or abs(int(text)) > INT64_MAX:
            return f"field '{key}' is {shown(record[key])}, beyond 64-bit integers"
    for key in FLOAT_COLUMNS:
        try:
            number = float(record[key])
        except ValueError:
            return f"field '{key}' is {shown(record[key])}, expected a number"
        if not math.isfinite(number) or number < 0:
            return f"field '{key}' is {shown(record[key])}, expected a non-negative number"
        if number > FLOAT32_MAX:
            return f"field '{key}' is {shown(record[key])}, beyond float32 (at most {FLOAT32_MAX:.3g})"
    if int(record["week"]) < int(record["creation_week"]):
        return f"week {record['week']} is before creation_week {record['creation_week']}"
    return None


def write_popularity(path: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """Write columns (as in PopularityTable.columns) as a cmsdl-popularity/1 CSV, atomically."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        cpu = [f"{v:.1f}" for v in columns["cpu_hours"]]
        size = [f"{v:.1f}" for v in columns["size_gb"]]
        other = [columns[c].tolist() for c in COLUMNS]
        other[COLUMNS.index("cpu_hours")], other[COLUMNS.index("size_gb")] = cpu, size
        writer.writerows(zip(*other))
    return Path(path)


@dataclass
class WeeklyTotals:
    """Per (dataset, week) totals over sites, on the dense grid datasets x [first_week, last_week]."""

    names: np.ndarray
    tiers: np.ndarray
    size_gb: np.ndarray
    nfiles: np.ndarray
    creation: np.ndarray
    first_week: int
    naccess: np.ndarray
    nusers: np.ndarray
    cpu_hours: np.ndarray
    nsites: np.ndarray

    @property
    def n_weeks(self) -> int:
        return self.naccess.shape[1]

    def popular(self, rule: LabelRule) -> np.ndarray:
        """Boolean (datasets x weeks) matrix of popular dataset-weeks."""
        return rule.apply(self.naccess, self.nusers, self.cpu_hours)


def weekly_totals(table: PopularityTable) -> WeeklyTotals:
    """Sum a table over sites into dense (dataset x week) matrices; static attributes from each dataset's first week."""
    names, ds = np.unique(table["dataset"], return_inverse=True)
    first, last = int(table["week"].min()), int(table["week"].max())
    if last - first >= MAX_WEEKS:
        raise InputFormatError(f"{table.source}: field 'week' spans weeks {first} to {last}; expected at most "
                               f"{MAX_WEEKS} weeks in one file (week 0 = the first week of the study)")
    wk = table["week"] - first
    shape = (len(names), last - first + 1)
    sums = {}
    for key in ("naccess", "nusers", "cpu_hours"):
        grid = np.zeros(shape)
        np.add.at(grid, (ds, wk), table[key])
        sums[key] = grid
    nsites = np.zeros(shape)
    np.add.at(nsites, (ds, wk), table["naccess"] > 0)
    by_week = np.lexsort((table["week"], ds))
    earliest = by_week[np.unique(ds[by_week], return_index=True)[1]]   # a later size is unknown before its week
    static = {key: table[key][earliest] for key in ("tier", "size_gb", "nfiles", "creation_week")}
    return WeeklyTotals(names, static["tier"], static["size_gb"], static["nfiles"], static["creation_week"],
                        first, sums["naccess"], sums["nusers"], sums["cpu_hours"], nsites)
