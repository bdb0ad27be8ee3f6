"""engine=spark for transfer logs: cmsdl-transfers/1 files (local paths, globs or URLs Spark reads) split at the
marker, checked, flattened and hashed by Spark, written as one Parquet table, read back as records.FlatTable.

Spark reads each file with the marker as its record separator (``lineSep``), so a record is one row however many
lines it spans; its start line is 1 + the newlines of the earlier records of its file
(cmsdl.features.spark_session.with_line_numbers) + those of its leading whitespace. Each record is decoded and
checked by records.check_record and flattened by records.flat_items in Spark's Python workers; every leaf becomes a
(name, value) row, and a column's conversion follows records._convert: numbers (null = missing) when every value of
the column converts to a number, else numbers as they are and text hashed (crc32 / 2**32). The wide table (one
column per dotted name, in sorted order, rows by file and line) is written to Parquet with the kinds beside it in
``_kinds.json``. The text after the last marker of a file is a truncated record when it is not blank.
Imports pyspark only inside functions; no torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import BadRecord, InputFormatError
from cmsdl.features.spark_session import (SHOW_BAD, SparkSettings, bad_summary, file_tails, local_path, partial_dir,
                                          publish_dir, read_text, spark_errors, spark_inputs, spark_session,
                                          with_line_numbers)
from cmsdl.features.transfers.records import MARKER, FlatTable, TransferLog, _as_float, check_record, flat_items, text_hash
from cmsdl.features.transfers.source import TransferFeatures
from cmsdl.io import loads_json

log = logging.getLogger(__name__)
KINDS = "_kinds.json"


def cell(value: Any) -> tuple[float | None, bool, float | None, bool]:
    """(value as a number, whether it converts to one, value as records._convert's mixed path gives it, hashed?)."""
    if value is None:
        return None, True, None, False
    if isinstance(value, (bool, int, float)):
        try:
            number: float | None = float(value)
            converts = True
        except OverflowError:
            number, converts = None, False
        return number, converts, _as_float(value), False
    text = str(value)
    try:
        number, converts = float(text), True
    except ValueError:
        number, converts = None, False
    return number, converts, text_hash(text), True


def record_rows(chunks: Iterable[Any], marker: str, list_limit: int) -> Iterator[tuple]:
    """Spark worker: (file, line, reason, tr_id, cells, split, id) per record chunk; blank tails are dropped.
    (split, id) is the chunk's read order in its file: two records on one line share `line`."""
    for chunk in chunks:
        text = chunk.value
        lead = len(text) - len(text.lstrip())
        line = chunk.line + text.count("\n", 0, lead)
        if chunk.tail:
            if text.strip():
                yield (chunk.file, line, f"truncated record (no {marker!r} marker before the end of the file)", None, [],
                       chunk.split, chunk.id)
            continue
        try:
            record = loads_json(text)
        except ValueError as err:
            yield chunk.file, line, f"not valid JSON ({getattr(err, 'msg', err)})", None, [], chunk.split, chunk.id
            continue
        problem = check_record(record)
        if problem:
            yield chunk.file, line, problem, None, [], chunk.split, chunk.id
            continue
        yield (chunk.file, line, None, str(record.get("tr_id")),
               [(name, *cell(v)) for name, v in flat_items(record, list_limit)], chunk.split, chunk.id)


def record_schema() -> Any:
    from pyspark.sql.types import (ArrayType, BooleanType, DoubleType, LongType, StringType, StructField, StructType)

    cells = StructType([StructField("name", StringType()), StructField("number", DoubleType()),
                        StructField("converts", BooleanType()), StructField("mixed", DoubleType()),
                        StructField("hashed", BooleanType())])
    return StructType([StructField("file", StringType()), StructField("line", LongType()),
                       StructField("reason", StringType()), StructField("tr_id", StringType()),
                       StructField("cells", ArrayType(cells)), StructField("split", LongType()),
                       StructField("id", LongType())])


def read_records(spark: Any, paths: list[str], marker: str, list_limit: int) -> tuple[Any, dict[str, int]]:
    """Checked records (DataFrame of record_schema) and the size of every file read."""
    from pyspark.sql import functions as F

    chunks = read_text(spark, paths, line_separator=marker)
    files = {r.file: r.file_size for r in chunks.select("file", "file_size").distinct().collect()}
    newlines = F.length("value") - F.length(F.regexp_replace("value", "\n", ""))
    chunks = with_line_numbers(chunks, newlines)
    if not files:
        raise InputFormatError(f"{', '.join(paths)}: no transfer records found")
    ends = file_tails(spark, files, len(marker.encode()))
    open_ended = [f for f, tail in ends.items() if tail != marker.encode()]
    last = chunks.groupBy("file").agg(F.max(F.struct("split", "id")).alias("_last"))
    chunks = chunks.join(F.broadcast(last), "file").withColumn(
        "tail", F.col("file").isin(open_ended) & (F.struct("split", "id") == F.col("_last")))
    rows = chunks.select("value", "file", "line", "tail", "split", "id").rdd.mapPartitions(
        lambda part: record_rows(part, marker, list_limit))
    return spark.createDataFrame(rows, record_schema()).persist(), files


def report_bad(records: Any, files: dict[str, int]) -> list[BadRecord]:
    """Warn per file about skipped records; no good record in a file raises (as records.read_transfer_log)."""
    from pyspark.sql import functions as F

    counts = {r.file: (r.good, r.bad) for r in records.groupBy("file").agg(
        F.count(F.when(F.col("reason").isNull(), 1)).alias("good"), F.count("reason").alias("bad")).collect()}
    first_bad = (records.filter(F.col("reason").isNotNull()).select("file", "line", "reason")
                 .orderBy("file", "line").limit(SHOW_BAD * len(files)).collect())
    listed = []
    for file in sorted(files):
        good, bad = counts.get(file, (0, 0))
        mine = [BadRecord(r.line, r.reason) for r in first_bad if r.file == file]
        if good == 0:
            raise InputFormatError(f"{local_path(file)}: no good records" + (f"; {bad_summary(local_path(file), mine, bad)}"
                                                                             if bad else ""))
        if bad:
            log.warning(bad_summary(local_path(file), mine, bad))
        listed += mine
    return listed


def wide_table(records: Any) -> tuple[Any, list[str], dict[str, str]]:
    """One row per good record (file, line, tr_id, then a column per flattened name) and the column kinds."""
    from pyspark.sql import functions as F

    good = records.filter(F.col("reason").isNull())
    keys = ["file", "line", "tr_id", "split", "id"]
    cells = good.select(*keys, F.explode("cells").alias("c")).select(*keys, "c.*")
    decided = cells.groupBy("name").agg(F.min(F.col("converts").cast("int")).alias("numeric"),
                                        F.max(F.col("hashed").cast("int")).alias("hashed")).collect()
    names = sorted(r.name for r in decided)
    numeric = {r.name for r in decided if r.numeric == 1}
    kinds = {r.name: "number" if r.name in numeric or not r.hashed else "text" for r in decided}
    index = {name: i for i, name in enumerate(names)}
    choice = records.sparkSession.createDataFrame([(n, index[n], n in numeric) for n in names],
                                                  "name string, col int, numeric boolean")
    value = F.when(F.col("numeric"), F.col("number")).otherwise(F.col("mixed"))
    cells = cells.join(F.broadcast(choice), "name").withColumn("value", value)
    wide = cells.groupBy(*keys).pivot("col", list(range(len(names)))).agg(F.first("value"))
    return wide.select(*keys, *(F.col(f"`{i}`").alias(f"c{i}") for i in range(len(names)))), names, kinds


def flatten_logs_spark(inputs: str | list[str], out: str | Path, settings: SparkSettings, marker: str = MARKER,
                       list_limit: int = 2) -> tuple[TransferLog, FlatTable]:
    """The good records of all inputs, flattened by Spark into `out` (Parquet, replaced atomically) and read back:
    a TransferLog (records carry only tr_id and file; lines, bad records, bytes) and the FlatTable of
    records.flatten_records."""
    paths = spark_inputs(inputs, "transfer log")
    name = ", ".join(paths)
    spark = spark_session(settings)
    out = Path(out)
    partial = partial_dir(out)
    with spark_errors(name, "reading and checking the transfer records"):
        records, files = read_records(spark, paths, marker, list_limit)
        bad = report_bad(records, files)
    with spark_errors(name, "flattening the transfer records"):
        wide, names, kinds = wide_table(records)
        wide.orderBy("file", "split", "id").drop("split", "id").write.mode("overwrite").parquet(str(partial))
    records.unpersist()
    (partial / KINDS).write_text(json.dumps({"names": names, "kinds": kinds}))
    publish_dir(partial, out)
    table, ids, lines, origins = read_flat_table(out)
    source = name if len(paths) > 1 else local_path(paths[0])
    transfer_log = TransferLog([{"tr_id": i, "file": f} for i, f in zip(ids, origins)], bad, source,
                               int(sum(files.values())), lines)
    return transfer_log, table


def read_flat_table(path: Path) -> tuple[FlatTable, list[str], list[int], list[str]]:
    """The FlatTable, record ids, start lines and files of a table written by :func:`flatten_logs_spark`."""
    import pyarrow.parquet as pq

    meta = json.loads((path / KINDS).read_text())
    data = pq.read_table(path).to_pydict()
    n = len(data["line"])
    columns = {name: np.array([np.nan if v is None else v for v in data[f"c{i}"]], dtype=np.float64)
               for i, name in enumerate(meta["names"])}
    return FlatTable(columns, dict(meta["kinds"]), n), list(data["tr_id"]), [int(v) for v in data["line"]], list(data["file"])


def fit_features_spark(features: TransferFeatures, table: FlatTable, keys: list[tuple[str, int]], path: Path,
                       settings: SparkSettings) -> dict[str, Any]:
    """features.fit on the training records `keys` (file, line), with the column statistics (static columns,
    Pearson correlations of the others, missing values as the placeholder) computed by Spark on the table `path`."""
    from pyspark.sql import functions as F

    spark = spark_session(settings)
    leaking, ids, rest = features.split_names(list(table.columns))
    index = {name: i for i, name in enumerate(json.loads((path / KINDS).read_text())["names"])}
    frame = spark.read.parquet(str(path)).join(spark.createDataFrame(keys, "file string, line long"), ["file", "line"])

    def filled(name: str) -> Any:
        column = F.col(f"c{index[name]}")
        return F.when(column.isNull() | F.isnan(column), F.lit(float(features.placeholder))).otherwise(column)

    train = frame.select(*(filled(name).alias(f"r{j}") for j, name in enumerate(rest)))
    with spark_errors(str(path), "computing column statistics of the training records"):
        stats = train.agg(*(F.min(f"r{j}") for j in range(len(rest))), *(F.max(f"r{j}") for j in range(len(rest))),
                          *(F.stddev_pop(f"r{j}") for j in range(len(rest)))).first() if rest else []
    n = len(rest)
    static = [name for j, name in enumerate(rest) if features.drop_static and stats[j] == stats[n + j]] if keys else []
    varying = [j for j, name in enumerate(rest) if name not in static and (stats[2 * n + j] or 0) > 0]
    pairs: list[tuple[str, str, float]] = []
    if len(keys) >= 3 and len([c for c in rest if c not in static]) >= 2 and len(varying) >= 2:
        grid = [(a, b) for i, a in enumerate(varying) for b in varying[i + 1:]]
        with spark_errors(str(path), "computing correlations of the training records"):
            r = train.agg(*(F.corr(f"r{a}", f"r{b}") for a, b in grid)).first()
        pairs = [(rest[a], rest[b], round(float(value), 3)) for (a, b), value in zip(grid, r)
                 if value is not None and abs(value) >= features.correlation]
        pairs.sort(key=lambda p: -abs(p[2]))
    return features.choose(table, leaking, ids, static, pairs)
