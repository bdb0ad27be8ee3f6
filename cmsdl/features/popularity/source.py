"""Next-week popularity samples: one row per (dataset, target week) built only from the weeks before it.

A dataset is a candidate for week ``w`` when it was read in the ``history_weeks`` before ``w``: the candidate set
comes only from records of earlier weeks. A dataset that has no record before ``w`` (new, or created earlier but
first read in ``w`` or later) is known only from reads of week ``w`` on, so it is no candidate; such datasets are
counted per week by :func:`uncovered_per_week` (new ones, and dormant ones not read within ``history_weeks``).
Its raw history values (:func:`raw_columns`) are ``log1p``-scaled and its tier one-hot encoded (tier vocabulary
fitted on training rows; unseen tiers go to ``other``). Imports no torch, so that the same features can be built
in production from raw records.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.popularity.records import FORMAT, LabelRule, WeeklyTotals, load_popularity, weekly_totals
from cmsdl.features.spark_session import SparkSettings, check_engine

log = logging.getLogger(__name__)

OTHER = "other"
CLASS_NAMES = ["unpopular", "popular"]


def raw_columns(lags: int) -> list[str]:
    """Names of the raw history values of a sample, in order."""
    return [*(f"naccess_lag{k}" for k in range(1, lags + 1)), "naccess_history", "nusers_lag1", "cpu_hours_lag1",
            "nsites_lag1", "popular_weeks_history", "weeks_since_read", "age_weeks", "size_gb", "nfiles"]


class Sample(NamedTuple):
    """One candidate dataset in one target week, with its raw history values."""

    name: str
    week: int
    tier: str
    values: np.ndarray


@dataclass
class PopularitySamples:
    """All samples as arrays; indexing gives a Sample (what TabularDataModule splits)."""

    datasets: np.ndarray
    weeks: np.ndarray
    tiers: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    size_gb: np.ndarray

    def __len__(self) -> int:
        return len(self.weeks)

    def __getitem__(self, i: int) -> Sample:
        return Sample(f"{self.datasets[i]}@{self.weeks[i]}", int(self.weeks[i]), str(self.tiers[i]), self.values[i])

    def select(self, mask: np.ndarray) -> PopularitySamples:
        return PopularitySamples(self.datasets[mask], self.weeks[mask], self.tiers[mask], self.values[mask],
                                 self.labels[mask], self.size_gb[mask])


def build_samples(totals: WeeklyTotals, rule: LabelRule, lags: int = 4, history_weeks: int = 8) -> PopularitySamples:
    """Samples for every target week that has at least one week of history."""
    if lags < 1 or history_weeks < lags:
        raise ConfigError(f"features: expected 1 <= lags <= history_weeks, got lags={lags}, history_weeks={history_weeks}")
    popular = totals.popular(rule)
    n_ds, n_weeks = totals.naccess.shape
    chunks = []
    for t in range(1, n_weeks):
        rows = candidates(totals, t, history_weeks)
        if len(rows):
            chunks.append((t, rows, _history(totals, popular, rows, t, lags, history_weeks)))
    if not chunks:
        raise InputFormatError("popularity records: need at least two weeks of data to build next-week samples")
    rows = np.concatenate([r for _, r, _ in chunks])
    weeks = np.concatenate([np.full(len(r), totals.first_week + t) for t, r, _ in chunks])
    labels = np.concatenate([popular[r, t] for t, r, _ in chunks]).astype(np.int64)
    values = np.concatenate([v for _, _, v in chunks])
    return PopularitySamples(totals.names[rows], weeks, totals.tiers[rows], values, labels, totals.size_gb[rows])


def candidates(totals: WeeklyTotals, t: int, history_weeks: int) -> np.ndarray:
    """Rows of the datasets read in the `history_weeks` before week index t (records of weeks < t only)."""
    return np.flatnonzero((totals.naccess[:, max(0, t - history_weeks):t] > 0).any(axis=1))


def uncovered_per_week(totals: WeeklyTotals, rule: LabelRule, history_weeks: int = 8) -> dict[int, dict[str, int]]:
    """Per target week, the datasets read that week that are no candidates, and how many of them are popular.

    ``new``: no read in any earlier week of the records (their existence is known from this week's reads only);
    ``dormant``: read before, but not in the last ``history_weeks``.
    """
    popular = totals.popular(rule)
    read = totals.naccess > 0
    seen_before = np.cumsum(read, axis=1) - read > 0
    counts = {}
    for t in range(1, totals.n_weeks):
        covered = np.zeros(len(read), bool)
        covered[candidates(totals, t, history_weeks)] = True
        new = read[:, t] & ~seen_before[:, t]
        dormant = read[:, t] & seen_before[:, t] & ~covered
        counts[totals.first_week + t] = {
            "n_new": int(new.sum()), "n_new_popular": int((new & popular[:, t]).sum()),
            "n_dormant": int(dormant.sum()), "n_dormant_popular": int((dormant & popular[:, t]).sum()),
        }
    return counts


def _history(totals: WeeklyTotals, popular: np.ndarray, rows: np.ndarray, t: int, lags: int, history: int) -> np.ndarray:
    """Raw history values (raw_columns order) of datasets `rows` for target week index t."""
    week = totals.first_week + t
    lo = max(0, t - history)
    acc = totals.naccess[rows, lo:t]
    lagged = [totals.naccess[rows, t - k] if t - k >= 0 else np.zeros(len(rows)) for k in range(1, lags + 1)]
    read_any = acc > 0
    last_read = np.where(read_any.any(axis=1), acc.shape[1] - 1 - np.argmax(read_any[:, ::-1], axis=1), -1)
    since = np.where(last_read >= 0, acc.shape[1] - last_read, history + 1)
    columns = [
        *lagged,
        acc.sum(axis=1),
        totals.nusers[rows, t - 1],
        totals.cpu_hours[rows, t - 1],
        totals.nsites[rows, t - 1],
        popular[rows, lo:t].sum(axis=1),
        since,
        np.maximum(week - totals.creation[rows], 0),
        totals.size_gb[rows],
        totals.nfiles[rows],
    ]
    return np.stack(columns, axis=1).astype(np.float64)


def feature_matrix(values: np.ndarray, tiers: np.ndarray, tier_vocab: Sequence[str]) -> np.ndarray:
    """log1p(raw values) followed by the tier one-hot (vocabulary + other), float32."""
    index = {t: i for i, t in enumerate(tier_vocab)}
    onehot = np.zeros((len(tiers), len(tier_vocab) + 1), dtype=np.float32)
    onehot[np.arange(len(tiers)), [index.get(t, len(tier_vocab)) for t in tiers]] = 1.0
    return np.concatenate([np.log1p(np.maximum(values, 0)).astype(np.float32), onehot], axis=1)


class PopularitySource:
    """Tabular source: next-week popularity of datasets from a cmsdl-popularity/1 CSV file."""

    def __init__(self, path: str | list[str], metric: str = "naccess", threshold: float = 10.0, lags: int = 4,
                 history_weeks: int = 8, engine: str = "local", spark: dict[str, Any] | None = None,
                 table_out: str | None = None) -> None:
        self.path = path
        self.engine = check_engine(engine, "data.source.engine")
        self.spark = SparkSettings.from_config(spark)
        self.table_out = table_out
        self.rule = LabelRule(metric, threshold)
        self.lags = lags
        self.history_weeks = history_weeks
        self.class_names = list(CLASS_NAMES)
        self.tiers: list[str] = []

    @property
    def fitted(self) -> bool:
        return bool(self.tiers)

    @property
    def feature_names(self) -> list[str]:
        return [*raw_columns(self.lags), *(f"tier={t}" for t in [*self.tiers, OTHER])]

    def _build(self) -> PopularitySamples:
        """Samples by engine: records.py in this process, or Spark (table kept in table_out, else a scratch dir)."""
        if self.engine == "local":
            return build_samples(weekly_totals(load_popularity(self.path)), self.rule, self.lags, self.history_weeks)
        from cmsdl.features.popularity.spark import build_samples_spark

        inputs = str(self.path) if isinstance(self.path, (str, Path)) else [str(p) for p in self.path]
        if self.table_out:
            return build_samples_spark(inputs, self.rule, self.lags, self.history_weeks, self.table_out,
                                       self.spark).samples
        with tempfile.TemporaryDirectory(prefix="cmsdl-popularity-") as scratch:
            return build_samples_spark(inputs, self.rule, self.lags, self.history_weeks,
                                       Path(scratch) / "samples.parquet", self.spark).samples

    def load(self) -> tuple[PopularitySamples, np.ndarray]:
        samples = self._build()
        log.info("%s: %d samples over %d weeks, %.1f%% popular (%s)", self.path, len(samples),
                 len(np.unique(samples.weeks)), 100 * samples.labels.mean(), self.rule.describe())
        return samples, samples.labels

    def fit(self, records: Sequence[Sample]) -> None:
        self.tiers = sorted({r.tier for r in records})

    def transform(self, records: Sequence[Sample] | PopularitySamples) -> np.ndarray:
        if isinstance(records, PopularitySamples):
            return feature_matrix(records.values, records.tiers, self.tiers)
        values = np.stack([r.values for r in records]) if len(records) else np.zeros((0, len(raw_columns(self.lags))))
        return feature_matrix(values, np.array([r.tier for r in records], dtype=object), self.tiers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "popularity",
            "format": FORMAT,
            "input": "raw history values per dataset and target week (raw_columns) and the dataset tier",
            "raw_columns": raw_columns(self.lags),
            "transform": "log1p(raw values), then one-hot of tier over tiers + ['other']",
            "tiers": list(self.tiers),
            "lags": self.lags,
            "history_weeks": self.history_weeks,
            "label": {"metric": self.rule.metric, "threshold": self.rule.threshold},
            "classes": self.class_names,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tiers = list(state["tiers"])
        self.lags = int(state["lags"])
        self.history_weeks = int(state["history_weeks"])
        self.rule = LabelRule(state["label"]["metric"], float(state["label"]["threshold"]))


def features_from_records(state: dict[str, Any], records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Raw feature rows for popularity records, one per dataset and target week: the dataset tier and its raw
    history values by name (the state's raw_columns), e.g. ``{"tier": "AODSIM", "naccess_lag1": 12, ...}``.
    Used by the torch-free predictor."""
    columns = list(state["raw_columns"])
    values = np.array([[float(record[c]) for c in columns] for record in records], dtype=np.float64)
    tiers = np.array([str(record["tier"]) for record in records], dtype=object)
    return feature_matrix(values.reshape(len(tiers), len(columns)), tiers, state["tiers"])
