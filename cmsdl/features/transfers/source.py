"""Transfer-latency features and targets: the flattened log minus what cannot or should not be used.

Dropped before training, as in the seed: attributes known only after the transfer ends (``leaking``: end and
start time, duration, failures, final state, retries), identifiers unique per transfer (``identifiers``),
and columns that are static over the training rows. Pairs of columns with ``|r| >= correlation`` are
reported (and dropped with ``drop_correlated``). Targets come from the timestamps: latency = end - submit;
the class is *early stuck* when the queue (start - submit) exceeds ``early_queue_hours``, *late stuck* when the
throughput stays below ``late_rate_mb_s``, else *normal*. Imports no torch.
"""

from __future__ import annotations

import fnmatch
import logging
import tempfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.spark_session import SparkSettings, check_engine
from cmsdl.features.transfers.records import (FORMAT, MARKER, FlatTable, TransferLog, drop_beyond_float32,
                                              flatten_records, read_transfer_log)

log = logging.getLogger(__name__)

CLASSES = ["normal", "early_stuck", "late_stuck"]
LEAKING = ("start_time", "end_time", "tx_duration", "failures", "final_state", "reason", "retries.*")
IDENTIFIERS = ("tr_id", "job_id", "file.lfn", "file.checksum.value", "block.name")
TARGETS = ("class", "latency")


class TransferRow(NamedTuple):
    """A transfer of the loaded log: its id and its row in the flat table."""

    name: str
    row: int


def latency_targets(table: FlatTable, early_queue_hours: float, late_rate_mb_s: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latency (s), class index and a mask of the rows whose timestamps allow both."""
    def column(name: str) -> np.ndarray:
        return table.columns.get(name, np.full(table.n_rows, np.nan))

    submit, start, end, size = column("submit_time"), column("start_time"), column("end_time"), column("file.bytes")
    valid = np.isfinite(submit + start + end + size) & (start >= submit) & (end >= start)
    with np.errstate(invalid="ignore", divide="ignore"):
        queue, rate = start - submit, size / 1e6 / np.maximum(end - start, 1e-3)
    classes = np.where(queue > early_queue_hours * 3600, 1, np.where(rate < late_rate_mb_s, 2, 0))
    return end - submit, classes, valid


class TransferFeatures:
    """Chooses the usable columns on training rows and turns tables (or raw records) into feature matrices."""

    def __init__(self, placeholder: float = -1.0, list_limit: int = 2, leaking: Sequence[str] = LEAKING,
                 identifiers: Sequence[str] = IDENTIFIERS, drop_static: bool = True, correlation: float = 0.95,
                 drop_correlated: bool = False) -> None:
        self.placeholder = placeholder
        self.list_limit = list_limit
        self.leaking = list(leaking)
        self.identifiers = list(identifiers)
        self.drop_static = drop_static
        self.correlation = correlation
        self.drop_correlated = drop_correlated
        self.columns: list[str] = []
        self.report: dict[str, Any] = {}

    def split_names(self, names: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Flattened column names as (leaking, identifiers, the rest)."""
        leaking = [c for c in names if any(fnmatch.fnmatch(c, p) for p in self.leaking)]
        ids = [c for c in names if c in self.identifiers and c not in leaking]
        return leaking, ids, [c for c in names if c not in leaking and c not in ids]

    def fit(self, table: FlatTable, rows: np.ndarray) -> dict[str, Any]:
        """Keep the columns that are neither leaking, identifiers, nor static on `rows`; report correlations."""
        leaking, ids, rest = self.split_names(list(table.columns))
        train = table.matrix(rest, self.placeholder)[rows]
        static = [c for j, c in enumerate(rest) if self.drop_static and np.ptp(train[:, j]) == 0] if len(rows) else []
        kept = [c for c in rest if c not in static]
        pairs = correlated_pairs(train[:, [rest.index(c) for c in kept]], kept, self.correlation)
        return self.choose(table, leaking, ids, static, pairs)

    def choose(self, table: FlatTable, leaking: list[str], ids: list[str], static: list[str],
               pairs: list[tuple[str, str, float]]) -> dict[str, Any]:
        """Set the kept columns and the report from the columns found leaking, identifying, static, correlated."""
        names = list(table.columns)
        kept = [c for c in names if c not in leaking and c not in ids and c not in static]
        dropped_corr = sorted({b for _, b, _ in pairs}) if self.drop_correlated else []
        self.columns = [c for c in kept if c not in dropped_corr]
        self.report = {"flattened_columns": len(names), "features": len(self.columns), "leaking": leaking,
                       "identifiers": ids, "static": static, "correlated": [list(p) for p in pairs],
                       "dropped_correlated": dropped_corr, "table_bytes": table.nbytes(),
                       "feature_bytes": table.nbytes(self.columns)}
        return self.report

    def transform(self, table: FlatTable) -> np.ndarray:
        return table.matrix(self.columns, self.placeholder).astype(np.float32)

    def transform_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Features straight from decoded log records (what a production predictor does)."""
        return self.transform(flatten_records(records, self.list_limit))

    def state_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "placeholder": self.placeholder, "list_limit": self.list_limit,
                "hash": "crc32(utf-8) / 2**32", "leaking": self.leaking, "identifiers": self.identifiers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.columns = list(state["columns"])
        self.placeholder = float(state["placeholder"])
        self.list_limit = int(state["list_limit"])


def correlated_pairs(x: np.ndarray, names: list[str], threshold: float) -> list[tuple[str, str, float]]:
    """Column pairs with |Pearson r| >= threshold, strongest first."""
    if x.shape[1] < 2 or x.shape[0] < 3:
        return []
    std = x.std(axis=0)
    ok = std > 0
    r = np.corrcoef(x[:, ok], rowvar=False)
    idx = np.flatnonzero(ok)
    pairs = [(names[idx[i]], names[idx[j]], round(float(r[i, j]), 3))
             for i in range(len(idx)) for j in range(i + 1, len(idx)) if abs(r[i, j]) >= threshold]
    return sorted(pairs, key=lambda p: -abs(p[2]))


def describe_reduction(report: dict[str, Any], log_bytes: int) -> str:
    """One line: columns kept, what was dropped and why, and the size reduction."""
    corr = ", ".join(f"{a}~{b} (r={r})" for a, b, r in report["correlated"][:5]) or "none"
    share = report["feature_bytes"] / max(report["table_bytes"], 1)
    return (f"{report['flattened_columns']} flattened columns -> {report['features']} features "
            f"(dropped {len(report['leaking'])} leaking, {len(report['identifiers'])} identifiers, "
            f"{len(report['static'])} static, {len(report['dropped_correlated'])} correlated); correlated: {corr}; "
            f"table {report['table_bytes'] / 1e6:.1f} MB -> {report['feature_bytes'] / 1e6:.1f} MB ({100 * share:.0f}%), "
            f"log text {log_bytes / 1e6:.1f} MB")


class TransferSource:
    """Tabular source: transfers of a cmsdl-transfers/1 log, with the latency class or log10 latency as target."""

    def __init__(self, path: str | list[str], target: str = "class", marker: str = MARKER,
                 early_queue_hours: float = 4.0, late_rate_mb_s: float = 1.0, log_target: bool = True,
                 features: TransferFeatures | None = None, engine: str = "local",
                 spark: dict[str, Any] | None = None, table_out: str | None = None):
        if target not in TARGETS:
            raise ConfigError(f"data.source.target: got {target!r}, expected one of {', '.join(TARGETS)}")
        self.engine = check_engine(engine, "data.source.engine")
        self.spark = SparkSettings.from_config(spark)
        self.table_out = table_out
        self.path, self.target, self.marker = path, target, marker
        self.early_queue_hours, self.late_rate_mb_s, self.log_target = early_queue_hours, late_rate_mb_s, log_target
        self.features = features or TransferFeatures()
        self.class_names = list(CLASSES) if target == "class" else [self._target_name()]
        self.table: FlatTable | None = None
        self.spark_table: Path | None = None       # engine=spark: the Parquet table of self.table
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.keys: list[tuple[Any, int]] = []      # (file, line) of each row of self.table
        self.log_bytes = 0

    def _target_name(self) -> str:
        return "log10_latency_s" if self.log_target else "latency_s"

    @property
    def fitted(self) -> bool:
        return bool(self.features.columns)

    @property
    def feature_names(self) -> list[str]:
        return list(self.features.columns)

    def _read_and_flatten(self) -> tuple[TransferLog, FlatTable]:
        """The log and its flat table, by engine: records.py in this process, or Spark (table kept in table_out)."""
        if self.engine == "local":
            transfer_log = read_transfer_log(self.path, self.marker)
            return transfer_log, flatten_records(transfer_log.records, self.features.list_limit)
        from cmsdl.features.transfers.spark import flatten_logs_spark

        inputs = str(self.path) if isinstance(self.path, (str, Path)) else [str(p) for p in self.path]
        if not self.table_out:  # a scratch table, kept while this source lives (fit reads it)
            self._scratch = tempfile.TemporaryDirectory(prefix="cmsdl-transfers-")
        self.spark_table = Path(self.table_out or Path(self._scratch.name) / "flat.parquet")
        return flatten_logs_spark(inputs, self.spark_table, self.spark, self.marker, self.features.list_limit)

    def load(self) -> tuple[list[TransferRow], np.ndarray]:
        transfer_log, table = self._read_and_flatten()
        self.table = drop_beyond_float32(transfer_log, table)
        self.keys = [(r.get("file"), line) for r, line in zip(transfer_log.records, transfer_log.lines)]
        if transfer_log.bad:
            log.warning(transfer_log.bad_summary())
        self.log_bytes = transfer_log.n_bytes
        latency, classes, valid = latency_targets(self.table, self.early_queue_hours, self.late_rate_mb_s)
        if valid.sum() < 10:
            raise InputFormatError(f"{self.path}: only {int(valid.sum())} records have submit, start and end times; "
                                   "need at least 10 to train")
        if not valid.all():
            log.warning("%s: %d records lack usable timestamps and have no target; skipped", self.path, (~valid).sum())
        rows = np.flatnonzero(valid)
        ids = [str(r.get("tr_id")) for r in transfer_log.records]
        records = [TransferRow(ids[i], int(i)) for i in rows]
        if self.target == "class":
            return records, classes[rows].astype(np.int64)
        target = np.log10(np.maximum(latency[rows], 1.0)) if self.log_target else latency[rows]
        return records, target.astype(np.float32)

    def fit(self, records: Sequence[TransferRow]) -> None:
        """Fit the features on `records` (engine=spark: the column statistics come from Spark's table)."""
        rows = np.array([r.row for r in records], dtype=np.int64)
        if self.engine == "spark" and self.spark_table is not None:
            from cmsdl.features.transfers.spark import fit_features_spark

            report = fit_features_spark(self.features, self._table(), [self.keys[r] for r in rows],
                                        self.spark_table, self.spark)
        else:
            report = self.features.fit(self._table(), rows)
        log.info("transfers: %s", describe_reduction(report, self.log_bytes))

    def transform(self, records: Sequence[TransferRow]) -> np.ndarray:
        return self.features.transform(self._table())[[r.row for r in records]]

    def _table(self) -> FlatTable:
        if self.table is None:
            self.load()
        return self.table  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "transfers", "format": FORMAT, "marker": self.marker, "target": self.target,
                "target_name": self.class_names if self.target == "class" else self._target_name(),
                "early_queue_hours": self.early_queue_hours, "late_rate_mb_s": self.late_rate_mb_s,
                "features": self.features.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features.load_state_dict(state["features"])
        self.marker = state.get("marker", self.marker)


def features_from_records(state: dict[str, Any], records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Raw (unscaled) feature rows for raw transfer records (decoded JSON objects), with a fitted TransferSource
    state; used by the torch-free predictor."""
    features = TransferFeatures()
    features.load_state_dict(state["features"])
    return features.transform_records(list(records))
