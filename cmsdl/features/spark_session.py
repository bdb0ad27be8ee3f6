"""The Spark session of `engine=spark` feature building: creation, the Java check, quiet logs, one-line errors, and
line numbers of text inputs. Imports pyspark only inside its functions (engine=local never loads it); no torch.

Configuration (the ``spark:`` block of configs/popularity.yaml, configs/data/*.yaml)::

    spark:
      master: local[*]            # spark://host:7077, yarn or k8s://... run the same code on a cluster
      app_name: cmsdl-features
      shuffle_partitions: 8       # spark.sql.shuffle.partitions: small for one machine
      conf: {spark.driver.memory: 4g}

Line numbers: Spark reads a text file in splits (byte ranges), so a row knows its file and split
(``_metadata.file_path``, ``_metadata.file_block_start``) but not its line. :func:`with_line_numbers` counts the
newlines of every earlier row of the same file: inside a split rows are read in order and carry consecutive
``monotonically_increasing_id`` values; the newlines of the earlier splits of a file come from a small per-split
table. Nothing is sorted across a whole file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmsdl.errors import BadRecord, CmsdlError, ConfigError, InputFormatError, describe_bad_records

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")
SHOW_BAD = 100  # bad rows collected per input file (all are counted)
SHOW_LISTED = 10  # of those, listed in the warning line
JAVA_MISSING = "Java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
QUIET_LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


class SparkJobError(CmsdlError, RuntimeError):
    """A Spark job failed: one line naming the input and the stage."""


@dataclass(frozen=True)
class SparkSettings:
    """The ``spark:`` block of a config, normalised."""

    master: str = "local[*]"
    app_name: str = "cmsdl-features"
    shuffle_partitions: int = 8
    conf: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> SparkSettings:
        block = dict(block or {})
        unknown = set(block) - {"master", "app_name", "shuffle_partitions", "conf"}
        if unknown:
            raise ConfigError(f"spark: unknown key(s) {sorted(unknown)}, expected master, app_name, "
                              "shuffle_partitions, conf")
        partitions = block.get("shuffle_partitions", cls.shuffle_partitions)
        if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
            raise ConfigError(f"spark.shuffle_partitions: got {partitions!r}, expected a positive integer")
        return cls(str(block.get("master", cls.master)), str(block.get("app_name", cls.app_name)), partitions,
                   dict(block.get("conf") or {}))


def check_engine(engine: str, where: str) -> str:
    """`engine` if it is one of ENGINES, else a ConfigError naming the key."""
    if engine not in ENGINES:
        raise ConfigError(f"{where}: got {engine!r}, expected one of {', '.join(ENGINES)}")
    return engine


def check_java() -> str:
    """The java executable Spark will start (JAVA_HOME first, then PATH); a ConfigError saying how to install it."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if java.is_file() and os.access(java, os.X_OK):
            return str(java)
        raise ConfigError(f"{JAVA_MISSING} (JAVA_HOME={home} has no bin/java)")
    found = shutil.which("java")
    if not found:
        raise ConfigError(JAVA_MISSING)
    return found


def spark_session(settings: SparkSettings) -> Any:
    """A SparkSession for `settings` (pyspark is imported here); Spark's own log lines are errors only."""
    check_java()
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("engine=spark needs pyspark: pip install 'cmsdl[spark]' (pyspark>=4)") from None
    log4j = Path(tempfile.gettempdir()) / "cmsdl-spark-log4j2.properties"
    if not log4j.is_file():
        log4j.write_text(QUIET_LOG4J)
    java_options = f"-Dlog4j2.configurationFile=file:{log4j}"
    builder = (SparkSession.builder.master(settings.master).appName(settings.app_name)
               .config("spark.sql.shuffle.partitions", settings.shuffle_partitions)
               .config("spark.default.parallelism", settings.shuffle_partitions)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.pyspark.python", sys.executable)
               .config("spark.pyspark.driver.python", sys.executable)
               .config("spark.driver.extraJavaOptions", java_options)
               .config("spark.executor.extraJavaOptions", java_options))
    for key, value in settings.conf.items():
        builder = builder.config(str(key), str(value))
    with spark_errors("the Spark session", "start"):
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def one_line(err: BaseException) -> str:
    """The first meaningful line of a Spark / Py4J error, without the JVM stack trace."""
    text = str(getattr(err, "getMessage", lambda: None)() or err) if not isinstance(err, str) else err
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "JVM stacktrace", "Traceback", "---")):
            line = re.sub(r"^(py4j\.protocol\.)?Py4JJavaError: An error occurred while calling \S+\.\s*", "", line)
            return line[:300]
    return type(err).__name__


@contextlib.contextmanager
def spark_errors(source: str, stage: str) -> Iterator[None]:
    """Turn a Spark, Py4J or Python-worker failure inside the block into one SparkJobError naming input and stage."""
    try:
        yield
    except CmsdlError:
        raise
    except Exception as err:  # noqa: BLE001 - pyspark raises many unrelated types; all become one line
        if type(err).__module__.split(".")[0] not in {"pyspark", "py4j"} and not isinstance(err, (OSError, RuntimeError)):
            raise
        raise SparkJobError(f"{source}: Spark failed while {stage}: {one_line(err)}") from None


def bad_summary(source: str, listed: list[BadRecord], count: int) -> str:
    """describe_bad_records for a file of which only the first bad rows were collected (`count` in all)."""
    line = describe_bad_records(source, listed[:SHOW_LISTED])
    line = line.replace(f"skipped {len(listed[:SHOW_LISTED])} ", f"skipped {count} ", 1)
    if count > SHOW_LISTED:
        line = line[:-1] + f"; ... {count - SHOW_LISTED} more)"
    return line


def with_line_numbers(frame: Any, newlines: Any) -> Any:
    """`frame` (read by spark.read.text, with columns file, split and id from :func:`read_text`) plus `line`:
    1 + the newlines (column expression `newlines`) of all earlier rows of the same file."""
    from pyspark.sql import Window, functions as F

    frame = frame.withColumn("_nl", newlines.cast("long"))
    in_split = Window.partitionBy("file", "split").orderBy("id").rowsBetween(Window.unboundedPreceding, -1)
    frame = frame.withColumn("_before_in_split", F.coalesce(F.sum("_nl").over(in_split), F.lit(0)))
    splits = frame.groupBy("file", "split").agg(F.sum("_nl").alias("_split_nl"))
    earlier = Window.partitionBy("file").orderBy("split").rowsBetween(Window.unboundedPreceding, -1)
    splits = splits.withColumn("_before_split", F.coalesce(F.sum("_split_nl").over(earlier), F.lit(0))).drop("_split_nl")
    frame = frame.join(F.broadcast(splits), ["file", "split"])
    return frame.withColumn("line", 1 + F.col("_before_split") + F.col("_before_in_split")).drop(
        "_nl", "_before_in_split", "_before_split")


def read_text(spark: Any, paths: list[str], line_separator: str | None = None) -> Any:
    """Rows of text files with their file, split start, file size and a per-split increasing id."""
    from pyspark.sql import functions as F

    reader = spark.read.format("text")
    if line_separator is not None:
        reader = reader.option("lineSep", line_separator)
    frame = reader.load(paths)
    return frame.select(F.col("value"), F.col("_metadata.file_path").alias("file"),
                        F.col("_metadata.file_block_start").alias("split"),
                        F.col("_metadata.file_size").alias("file_size"),
                        F.monotonically_increasing_id().alias("id"))


def file_tails(spark: Any, files: Mapping[str, int], n_bytes: int) -> dict[str, bytes]:
    """The last `n_bytes` bytes of each file {path: size}, read through Hadoop's file system (local, hdfs://, ...)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    tails = {}
    for path, size in files.items():
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        stream = hadoop_path.getFileSystem(conf).open(hadoop_path)
        try:
            start = max(0, int(size) - n_bytes)
            stream.seek(start)
            tails[path] = bytes(stream.read() & 0xFF for _ in range(int(size) - start))
        finally:
            stream.close()
    return tails


def local_path(url: str) -> str:
    """A `file:` URL as Spark reports it, as a plain path (other URLs unchanged), for error lines."""
    return url[len("file:"):] if url.startswith("file:") else url


def readable_inputs(paths: list[str], what: str) -> tuple[list[str], list[str]]:
    """Input paths split into (readable, reasons for the skipped ones); local paths are checked here, URLs
    (hdfs://, s3a://, ...) and globs are left to Spark."""
    good, skipped = [], []
    for path in paths:
        if "://" in path or any(ch in path for ch in "*?["):
            good.append(path)
            continue
        local = Path(path)
        if not local.exists():
            skipped.append(f"{path}: no such {what}")
        elif local.is_file() and not os.access(local, os.R_OK):
            skipped.append(f"{path}: cannot read {what} (permission denied)")
        else:
            good.append(str(local.resolve()))
    return good, skipped


def spark_inputs(inputs: str | Sequence[str | Path], what: str) -> list[str]:
    """The readable inputs; each skipped one is a warning, and none readable is one error line."""
    paths, skipped = readable_inputs([inputs] if isinstance(inputs, str) else [str(p) for p in inputs], what)
    for reason in skipped:
        log.warning("%s; skipped", reason)
    if not paths:
        raise InputFormatError("; ".join(skipped))
    return paths


def partial_dir(out: Path) -> Path:
    """Where a Parquet directory is written before :func:`publish_dir` puts it in place."""
    return out.with_name(f".{out.name}.partial")


def publish_dir(partial: Path, out: Path) -> None:
    """Replace `out` by the finished `partial` directory."""
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
