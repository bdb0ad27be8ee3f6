"""engine=spark for popularity: the same samples as records.py + source.py, built by Spark from one or many
cmsdl-popularity/1 CSV files (local paths, globs or URLs Spark reads: hdfs://, s3a://) and written as Parquet.

Steps, all in Spark: lines with file and line number (cmsdl.features.spark_session.with_line_numbers); each row
checked by the local rules (records._check_row, in Spark's Python workers), bad rows counted per file and listed
by line; weekly totals per dataset (sum over sites) and each dataset's static attributes from its earliest
record; every weekly total fanned out to the ``history_weeks`` target weeks after it, so a target week t sees
only weeks < t; candidates, history values (source.raw_columns), labels and the uncovered counts per week.
The Parquet table (:data:`SAMPLE_COLUMNS`, sorted by week then dataset) is read back into PopularitySamples,
row for row what source.build_samples gives. Imports pyspark only inside functions; no torch.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import BadRecord, ConfigError, InputFormatError
from cmsdl.features.popularity.records import COLUMNS, FLOAT_COLUMNS, FORMAT, INT_COLUMNS, MAX_WEEKS, LabelRule, _check_row
from cmsdl.features.popularity.source import PopularitySamples, raw_columns
from cmsdl.features.spark_session import (SHOW_BAD, SparkSettings, bad_summary, file_tails, local_path, partial_dir,
                                          publish_dir, read_text, spark_errors, spark_inputs, spark_session,
                                          with_line_numbers)

log = logging.getLogger(__name__)


@dataclass
class SparkPopularity:
    """What the Spark engine returns: the samples, the uncovered counts per week and the skipped rows."""

    samples: PopularitySamples
    uncovered: dict[int, dict[str, int]]
    bad: list[BadRecord]
    bad_counts: dict[str, int]
    table: Path


def check_line(file: str, line: int, text: str, truncated_line: int | None) -> tuple[list[str] | None, str | None]:
    """(fields, None) for a good data row, (None, reason) for a bad one, (None, None) for a blank line."""
    if truncated_line == line:
        return None, "truncated last line (no newline at end of file)"
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as err:
        return None, f"not readable as CSV ({err})"
    if not fields:
        return None, None
    if len(fields) != len(COLUMNS):
        return None, f"{len(fields)} fields, expected {len(COLUMNS)}"
    return fields, _check_row(fields)


def checked_rows(rows: Iterable[Any], truncated: dict[str, int], file_index: dict[str, int]) -> Iterator[tuple]:
    """Spark worker: (file, file index, line, reason, *typed fields) per data row; fields are None for bad rows."""
    for row in rows:
        if row.line == 1:
            continue
        fields, reason = check_line(row.file, row.line, row.value, truncated.get(row.file))
        if fields is None and reason is None:
            continue
        typed: list[Any] = [None] * len(COLUMNS)
        if reason is None:
            typed = [int(v) if c in INT_COLUMNS else float(v) if c in FLOAT_COLUMNS else v for c, v in zip(COLUMNS, fields)]
        yield (row.file, file_index[row.file], row.line, reason, *typed)


def row_schema() -> Any:
    from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType

    kinds = {c: LongType() if c in INT_COLUMNS else DoubleType() if c in FLOAT_COLUMNS else StringType() for c in COLUMNS}
    return StructType([StructField("file", StringType()), StructField("file_index", IntegerType()),
                       StructField("line", LongType()), StructField("reason", StringType()),
                       *(StructField(c, kinds[c]) for c in COLUMNS)])


def read_checked(spark: Any, paths: list[str], max_bad_fraction: float) -> tuple[Any, list[BadRecord], dict[str, int]]:
    """Good rows as a DataFrame, the first bad rows of every file (by line) and the bad count per file."""
    from pyspark.sql import functions as F

    text = read_text(spark, paths)
    files = {r.file: r.file_size for r in text.select("file", "file_size").distinct().collect()}
    lines = with_line_numbers(text, F.lit(1)).persist()
    if not files:
        raise InputFormatError(f"{', '.join(paths)}: no popularity records ({FORMAT}) found")
    check_headers(lines)
    last = dict(lines.groupBy("file").agg(F.max("line")).collect())
    tails = file_tails(spark, files, 1)
    truncated = {f: last[f] for f, tail in tails.items() if tail and tail not in (b"\n", b"\r")}
    index = {f: i for i, f in enumerate(sorted(files))}
    rows = spark.createDataFrame(lines.rdd.mapPartitions(lambda part: checked_rows(part, truncated, index)),
                                 row_schema()).persist()
    counts = {r.file: (r.good, r.bad) for r in rows.groupBy("file").agg(
        F.count(F.when(F.col("reason").isNull(), 1)).alias("good"),
        F.count(F.col("reason")).alias("bad")).collect()}
    bad_rows = rows.filter(F.col("reason").isNotNull()).select("file", "line", "reason")
    first_bad = bad_rows.orderBy("file", "line").limit(SHOW_BAD * len(files)).collect()
    bad_counts = {}
    for file in sorted(files):
        good, bad = counts.get(file, (0, 0))
        summary = bad_summary(local_path(file), [BadRecord(r.line, r.reason) for r in first_bad if r.file == file], bad)
        if good == 0 or bad > max_bad_fraction * (good + bad):
            raise InputFormatError(f"{summary}; only {good} good records, expected mostly good ones")
        if bad:
            log.warning(summary)
            bad_counts[local_path(file)] = bad
    lines.unpersist()
    return rows.filter(F.col("reason").isNull()), [BadRecord(r.line, r.reason) for r in first_bad], bad_counts


def check_headers(lines: Any) -> None:
    """Line 1 of every file must be the header (a byte-order mark before it is ignored)."""
    from pyspark.sql import functions as F

    for row in lines.filter(F.col("line") == 1).select("file", "value").collect():
        if tuple(h.strip() for h in row.value.lstrip("\ufeff").split(",")) != COLUMNS:
            raise InputFormatError(f"{local_path(row.file)}: line 1 must be the header {','.join(COLUMNS)} ({FORMAT}), "
                                   f"got {row.value[:120]!r}")


def popular_expression(rule: LabelRule) -> Any:
    """rule.apply as a Spark column over weekly totals (log of 0 is never popular)."""
    from pyspark.sql import functions as F

    value = F.col(rule.metric.removeprefix("log_")).cast("double")
    if rule.metric.startswith("log_"):
        value = F.when(value > 0, F.log(value))
    return F.coalesce(value > F.lit(float(rule.threshold)), F.lit(False))


def weekly(good: Any, rule: LabelRule) -> tuple[Any, Any, int, int]:
    """Weekly totals per dataset (with popular), static attributes per dataset, first and last week."""
    from pyspark.sql import functions as F

    first, last = good.agg(F.min("week"), F.max("week")).first()
    if last - first >= MAX_WEEKS:
        raise InputFormatError(f"popularity records: field 'week' spans weeks {first} to {last}; expected at most "
                               f"{MAX_WEEKS} weeks in one file (week 0 = the first week of the study)")
    totals = good.groupBy("dataset", "week").agg(
        F.sum("naccess").cast("double").alias("naccess"), F.sum("nusers").cast("double").alias("nusers"),
        F.sum("cpu_hours").alias("cpu_hours"), F.count(F.when(F.col("naccess") > 0, 1)).cast("double").alias("nsites"))
    totals = totals.withColumn("popular", popular_expression(rule)).persist()
    earliest = F.min(F.struct("week", "file_index", "line", "tier", "size_gb", "nfiles", "creation_week"))
    static = good.groupBy("dataset").agg(earliest.alias("e")).select(
        "dataset", "e.tier", "e.size_gb", F.col("e.nfiles").cast("double").alias("nfiles"), "e.creation_week")
    return totals, static, int(first), int(last)


def history_features(totals: Any, static: Any, lags: int, history_weeks: int, last: int) -> Any:
    """One row per candidate (dataset, target week): raw_columns(lags), tier, size_gb and label."""
    from pyspark.sql import functions as F

    ahead = totals.filter(F.col("week") < last).withColumn(
        "target", F.explode(F.sequence(F.col("week") + 1, F.least(F.col("week") + history_weeks, F.lit(last)))))
    gap = F.col("target") - F.col("week")

    def at_lag(k: int, name: str) -> Any:
        return F.coalesce(F.sum(F.when(gap == k, F.col(name))), F.lit(0.0))

    read = F.col("naccess") > 0
    features = ahead.groupBy("dataset", "target").agg(
        F.max(read.cast("int")).alias("candidate"),
        *(at_lag(k, "naccess").alias(f"naccess_lag{k}") for k in range(1, lags + 1)),
        F.sum("naccess").alias("naccess_history"), at_lag(1, "nusers").alias("nusers_lag1"),
        at_lag(1, "cpu_hours").alias("cpu_hours_lag1"), at_lag(1, "nsites").alias("nsites_lag1"),
        F.sum(F.col("popular").cast("double")).alias("popular_weeks_history"),
        F.max(F.when(read, F.col("week"))).alias("last_read"))
    features = features.filter(F.col("candidate") == 1).join(static, "dataset")
    labels = totals.select("dataset", F.col("week").alias("target"), F.col("popular").alias("label"))
    features = features.join(labels, ["dataset", "target"], "left")
    return features.select(
        "dataset", F.col("target").alias("week"), "tier",
        *(F.col(c) for c in raw_columns(lags)[:lags + 5]),
        (F.col("target") - F.col("last_read")).cast("double").alias("weeks_since_read"),
        F.greatest(F.col("target") - F.col("creation_week"), F.lit(0)).cast("double").alias("age_weeks"),
        F.col("size_gb"), F.col("nfiles"), F.coalesce(F.col("label"), F.lit(False)).cast("long").alias("label"))


def uncovered_counts(totals: Any, samples: Any, first: int, last: int) -> dict[int, dict[str, int]]:
    """source.uncovered_per_week from Spark tables: datasets read in week t that are no candidates."""
    from pyspark.sql import functions as F

    read = totals.filter(F.col("naccess") > 0)
    first_read = read.groupBy("dataset").agg(F.min("week").alias("first_read"))
    keys = samples.select("dataset", "week", F.lit(True).alias("candidate"))
    rows = (read.filter(F.col("week") > first).join(first_read, "dataset").join(keys, ["dataset", "week"], "left")
            .filter(F.col("candidate").isNull()))
    new, dormant = F.col("week") == F.col("first_read"), F.col("week") > F.col("first_read")
    counts = rows.groupBy("week").agg(
        F.count(F.when(new, 1)).alias("n_new"), F.count(F.when(new & F.col("popular"), 1)).alias("n_new_popular"),
        F.count(F.when(dormant, 1)).alias("n_dormant"),
        F.count(F.when(dormant & F.col("popular"), 1)).alias("n_dormant_popular")).collect()
    out = {week: {"n_new": 0, "n_new_popular": 0, "n_dormant": 0, "n_dormant_popular": 0}
           for week in range(first + 1, last + 1)}
    for row in counts:
        out[int(row.week)] = {k: int(row[k]) for k in ("n_new", "n_new_popular", "n_dormant", "n_dormant_popular")}
    return out


def read_samples(table: Path, lags: int) -> PopularitySamples:
    """PopularitySamples from the Parquet table written by :func:`build_samples_spark`."""
    import pyarrow.parquet as pq

    data = pq.read_table(table).to_pydict()
    if not data.get("week"):
        raise InputFormatError(f"{table}: popularity records: need at least two weeks of data to build next-week samples")
    values = np.stack([np.asarray(data[c], dtype=np.float64) for c in raw_columns(lags)], axis=1)
    return PopularitySamples(np.array(data["dataset"], dtype=object), np.asarray(data["week"], dtype=np.int64),
                             np.array(data["tier"], dtype=object), values, np.asarray(data["label"], dtype=np.int64),
                             np.asarray(data["size_gb"], dtype=np.float64))


def build_samples_spark(inputs: str | list[str], rule: LabelRule, lags: int, history_weeks: int, out: str | Path,
                        settings: SparkSettings, max_bad_fraction: float = 0.5) -> SparkPopularity:
    """Samples of all inputs built by Spark and written to `out` (a Parquet directory, replaced atomically)."""
    if lags < 1 or history_weeks < lags:
        raise ConfigError(f"features: expected 1 <= lags <= history_weeks, got lags={lags}, history_weeks={history_weeks}")
    paths = spark_inputs(inputs, "popularity file")
    name = ", ".join(paths)
    spark = spark_session(settings)
    out = Path(out)
    partial = partial_dir(out)
    with spark_errors(name, "reading and checking the popularity records"):
        good, bad, bad_counts = read_checked(spark, paths, max_bad_fraction)
    with spark_errors(name, "building weekly totals and history features"):
        totals, static, first, last = weekly(good, rule)
        samples = history_features(totals, static, lags, history_weeks, last)
        samples.orderBy("week", "dataset").write.mode("overwrite").parquet(str(partial))
    with spark_errors(name, "counting uncovered datasets"):
        uncovered = uncovered_counts(totals, spark.read.parquet(str(partial)), first, last)
    totals.unpersist()
    publish_dir(partial, out)
    return SparkPopularity(read_samples(out, lags), uncovered, bad, bad_counts, out)
