"""FTS-like transfer logs: loosely structured JSON records with a custom end-of-record marker → a flat table.

Format ``cmsdl-transfers/1``: UTF-8 text; every record is one JSON object followed by the marker (``<EOR>``
by default), usually one record per line; a record may span lines. Example::

    {"tr_id": "5f0c…", "submit_time": 1528100000.0, "src": {"site": "T1_US_FNAL", "kind": "tape"},
     "dst": {"site": "T2_IT_Pisa"}, "file": {"bytes": 2147483648, "checksum": {"type": "adler32"}},
     "params": {"streams": 4}, "start_time": 1528100420.5, "end_time": 1528100980.0, "failures": 0}<EOR>

Required: ``tr_id`` (string), ``submit_time`` (number), ``src.site`` and ``dst.site`` (strings),
``file.bytes`` (number). Everything else is optional and may be missing. A UTF-8 byte-order mark before the
first record is ignored. Records that are not JSON objects (or nest deeper than Python's recursion limit), miss
a required field, have one of the wrong type, or are cut off (text after the last marker) are skipped and
reported with their line numbers; so are, when training, records with a number beyond float32 (features are
float32: ``file.bytes = 1e40`` would turn every loss into NaN).

Flattening: nested objects become dotted names (``src.site``), a list becomes ``name.len`` plus its first
``list_limit`` items (``retries.0.reason``). Numbers and booleans stay numbers; text is hashed to a number
(``crc32(utf-8) / 2**32``); a missing value gets the placeholder. Imports no torch.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import BadRecord, InputFormatError, describe_bad_records, shown
from cmsdl.io import loads_json, read_input_text

FORMAT = "cmsdl-transfers/1"
MARKER = "<EOR>"
REQUIRED: dict[str, tuple[type, ...]] = {
    "tr_id": (str,), "submit_time": (int, float), "src.site": (str,), "dst.site": (str,), "file.bytes": (int, float),
}
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class TransferLog:
    """The good records of a log (decoded JSON objects) with the line each starts on, the skipped ones, and the
    text size read."""

    records: list[dict[str, Any]]
    bad: list[BadRecord] = field(default_factory=list)
    source: str = "<log>"
    n_bytes: int = 0
    lines: list[int] = field(default_factory=list)

    def bad_summary(self) -> str:
        return describe_bad_records(self.source, sorted(self.bad, key=lambda b: b.line))


def read_transfer_log(path: str | Path, marker: str = MARKER) -> TransferLog:
    """Read a cmsdl-transfers/1 log; bad records are skipped and listed, an unreadable file raises."""
    path = Path(path)
    text = read_input_text(path, "transfer log")
    log = parse_transfer_log(text, marker, str(path))
    if not log.records:
        raise InputFormatError(f"{path}: no good records ending in {marker!r}" + (f"; {log.bad_summary()}" if log.bad else ""))
    return log


def parse_transfer_log(text: str, marker: str = MARKER, source: str = "<log>") -> TransferLog:
    """Split text at the marker and decode each record: one json.loads call when the whole log is clean."""
    chunks = text.split(marker)
    tail = chunks.pop()
    bad: list[BadRecord] = []
    try:
        decoded: list[Any] | None = loads_json("[" + ",".join(chunks) + "]") if chunks else []
    except ValueError:
        decoded = None
    lines = _start_lines(chunks)
    records: list[dict[str, Any]] = []
    good_lines: list[int] = []
    for i, chunk in enumerate(chunks):
        if decoded is not None:
            obj = decoded[i]
        else:
            try:
                obj = loads_json(chunk)
            except ValueError as err:
                bad.append(BadRecord(lines[i], f"not valid JSON ({getattr(err, 'msg', err)})"))
                continue
        problem = check_record(obj)
        if problem:
            bad.append(BadRecord(lines[i], problem))
        else:
            records.append(obj)
            good_lines.append(lines[i])
    if tail.strip():
        start = 1 + text.count("\n", 0, len(text) - len(tail))
        first = start + tail.count("\n", 0, len(tail) - len(tail.lstrip()))
        bad.append(BadRecord(first, f"truncated record (no {marker!r} marker before the end of the file)"))
    return TransferLog(records, bad, source, len(text.encode()), good_lines)


def _start_lines(chunks: list[str]) -> list[int]:
    """1-based line on which each record's text starts (after leading whitespace)."""
    out, line = [], 1
    for chunk in chunks:
        lead = len(chunk) - len(chunk.lstrip())
        out.append(line + chunk.count("\n", 0, lead))
        line += chunk.count("\n")
    return out


def check_record(obj: Any) -> str | None:
    """Why a decoded record is bad, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for name, types in REQUIRED.items():
        value: Any = obj
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return f"missing field '{name}'"
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "a string" if types == (str,) else "a number"
            return f"field '{name}' is {shown(value)}, expected {expected}"
    return None


def flatten(record: dict[str, Any], list_limit: int = 2, prefix: str = "") -> dict[str, Any]:
    """One record as {dotted name: leaf value} (see the module docstring for lists)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = prefix + key
        if isinstance(value, dict):
            out.update(flatten(value, list_limit, name + "."))
        elif isinstance(value, list):
            out[name + ".len"] = len(value)
            for i, item in enumerate(value[:list_limit]):
                if isinstance(item, dict):
                    out.update(flatten(item, list_limit, f"{name}.{i}."))
                else:
                    out[f"{name}.{i}"] = item
        else:
            out[name] = value
    return out


def text_hash(text: str) -> float:
    """A stable number in [0, 1) for a text value: crc32 of its UTF-8 bytes / 2**32."""
    return zlib.crc32(text.encode()) / 4294967296.0


@dataclass
class FlatTable:
    """Flattened records as float columns (missing = NaN until a placeholder is set), with the column kinds."""

    columns: dict[str, np.ndarray]
    kinds: dict[str, str]
    n_rows: int

    def matrix(self, names: list[str], placeholder: float) -> np.ndarray:
        """Columns `names` (absent ones all missing) as a float64 matrix, missing values set to `placeholder`."""
        out = np.full((self.n_rows, len(names)), placeholder, dtype=np.float64)
        for j, name in enumerate(names):
            column = self.columns.get(name)
            if column is not None:
                out[:, j] = np.where(np.isnan(column), placeholder, column)
        return out

    def nbytes(self, names: list[str] | None = None) -> int:
        """Size of the table (or of some of its columns) as float32 cells."""
        return 4 * self.n_rows * len(self.columns if names is None else names)

    def beyond_float32(self) -> dict[int, str]:
        """Rows holding a number that float32 cannot hold (±inf included; missing values are not), each with the
        first such column."""
        found: dict[int, str] = {}
        for name, column in self.columns.items():
            with np.errstate(invalid="ignore"):
                for row in np.flatnonzero(np.abs(column) > FLOAT32_MAX).tolist():
                    found.setdefault(row, name)
        return found

    def take(self, rows: np.ndarray) -> FlatTable:
        """The table of `rows` only."""
        return FlatTable({name: column[rows] for name, column in self.columns.items()}, dict(self.kinds), len(rows))


def drop_beyond_float32(transfer_log: TransferLog, table: FlatTable) -> FlatTable:
    """Skip the records whose numbers float32 cannot hold (reported in `transfer_log.bad` with line and field);
    returns the table of the other records, and leaves only those in `transfer_log.records`."""
    found = table.beyond_float32()
    if not found:
        return table
    for row, name in sorted(found.items()):
        value = float(table.columns[name][row])
        transfer_log.bad.append(BadRecord(transfer_log.lines[row], f"field '{name}' is {value:g}, beyond float32 "
                                                                   f"(features are float32; at most {FLOAT32_MAX:.3g})"))
    keep = np.array([row for row in range(table.n_rows) if row not in found], dtype=np.int64)
    transfer_log.records = [transfer_log.records[row] for row in keep]
    transfer_log.lines = [transfer_log.lines[row] for row in keep]
    return table.take(keep)


def flatten_records(records: list[dict[str, Any]], list_limit: int = 2) -> FlatTable:
    """Flatten many records straight into columns: values are gathered per column, then converted once."""
    rows: dict[str, list[int]] = {}
    values: dict[str, list[Any]] = {}
    for i, record in enumerate(records):
        for name, value in flat_items(record, list_limit):
            column = values.get(name)
            if column is None:
                rows[name], values[name] = [], []
                column = values[name]
            rows[name].append(i)
            column.append(value)
    columns, kinds = {}, {}
    for name in sorted(values):
        converted, kinds[name] = _convert(values[name])
        full = np.full(len(records), np.nan)
        full[np.asarray(rows[name], dtype=np.int64)] = converted
        columns[name] = full
    return FlatTable(columns, kinds, len(records))


def flat_items(record: dict[str, Any], list_limit: int = 2) -> Iterator[tuple[str, Any]]:
    """(dotted name, leaf value) of one record, as flatten_records gathers them (lists as in the module docstring)."""
    stack: list[tuple[str, dict[str, Any]]] = [("", record)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((prefix + key + ".", value))
            elif isinstance(value, list):
                stack.append((prefix + key + ".", _list_node(value, list_limit)))
            else:
                yield prefix + key, value


def _list_node(value: list[Any], list_limit: int) -> dict[str, Any]:
    node: dict[str, Any] = {"len": len(value)}
    for i, item in enumerate(value[:list_limit]):
        node[str(i)] = item
    return node


def _convert(values: list[Any]) -> tuple[np.ndarray, str]:
    """Numbers as they are (booleans 0/1, null missing), text hashed once per distinct value."""
    try:
        return np.array(values, dtype=np.float64), "number"
    except (TypeError, ValueError, OverflowError):
        pass
    memo: dict[str, float] = {}
    out = np.empty(len(values))
    for j, value in enumerate(values):
        if value is None:
            out[j] = np.nan
        elif isinstance(value, (int, float)):
            out[j] = _as_float(value)
        else:
            text = str(value)
            number = memo.get(text)
            if number is None:
                number = memo[text] = text_hash(text)
            out[j] = number
    return out, "text" if memo else "number"


def _as_float(number: int | float) -> float:
    """A JSON number as float64; an integer beyond float64 becomes ±inf (and is reported where that matters)."""
    try:
        return float(number)
    except OverflowError:
        return float("inf") if number > 0 else float("-inf")


def naive_flatten_table(lines: list[str], marker: str = MARKER, list_limit: int = 2,
                        placeholder: float = -1.0) -> tuple[list[str], list[list[float]]]:
    """The straightforward way, for the benchmark: per record parse, flatten to a dict, then fill a row per record."""
    flat = []
    for line in lines:
        text = line.strip()
        if not text.endswith(marker):
            continue
        flat.append(flatten(json.loads(text[: -len(marker)]), list_limit))
    names = sorted({key for row in flat for key in row})
    table = []
    for row in flat:
        cells = []
        for name in names:
            value = row.get(name)
            if value is None:
                cells.append(placeholder)
            elif isinstance(value, (bool, int, float)):
                cells.append(float(value))
            else:
                cells.append(text_hash(str(value)))
        table.append(cells)
    return names, table
