"""engine=spark: the same popularity samples, AUC per week and transfer tables as engine=local, and its bad input.

Tests that start Spark (a JVM, several seconds) are marked slow and share one local-mode session with two
shuffle partitions; the others check settings, the Java check and the error lines without starting it.
"""

from __future__ import annotations

import ast
import importlib.util
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features import spark_session
from cmsdl.features.popularity.records import LabelRule, load_popularity, weekly_totals, write_popularity
from cmsdl.features.popularity.source import PopularitySource, build_samples, uncovered_per_week
from cmsdl.features.spark_session import (JAVA_MISSING, SparkJobError, SparkSettings, check_engine, check_java,
                                          one_line, spark_errors)
from cmsdl.features.transfers.records import flatten_records, read_transfer_log
from cmsdl.features.transfers.source import TransferSource
from cmsdl.sim.popularity import simulate_popularity
from cmsdl.sim.transfers import simulate_transfers, write_log

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SparkSettings(master="local[2]", app_name="cmsdl-tests", shuffle_partitions=2)
SPARK_BLOCK = {"master": "local[2]", "app_name": "cmsdl-tests", "shuffle_partitions": 2}


def spark_missing() -> str:
    """Why Spark cannot start here ('' when it can): like the root:// tests without xrootd, these are skipped."""
    try:
        check_java()
    except ConfigError as err:
        return str(err)
    return "" if importlib.util.find_spec("pyspark") else "pyspark is not installed (pip install 'cmsdl[spark]')"


needs_spark = pytest.mark.skipif(bool(spark_missing()), reason=spark_missing() or "Spark available")


def test_engine_and_spark_settings_are_checked() -> None:
    assert check_engine("spark", "engine") == "spark"
    with pytest.raises(ConfigError, match=r"engine: got 'hadoop', expected one of local, spark"):
        check_engine("hadoop", "engine")
    with pytest.raises(ConfigError, match=r"spark.shuffle_partitions: got 0"):
        SparkSettings.from_config({"shuffle_partitions": 0})
    with pytest.raises(ConfigError, match=r"spark: unknown key\(s\) \['mastr'\]"):
        SparkSettings.from_config({"mastr": "local[1]"})
    assert SparkSettings.from_config(None).master == "local[*]"
    with pytest.raises(ConfigError, match="data.source.engine: got 'dask'"):
        PopularitySource("x.csv", engine="dask")


def test_missing_java_is_one_line_saying_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        check_java()
    assert str(caught.value) == JAVA_MISSING and "openjdk-17-jre-headless" in JAVA_MISSING
    with pytest.raises(ConfigError, match="JAVA_HOME"):
        spark_session.spark_session(SETTINGS)              # checked before pyspark starts a JVM
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=f"JAVA_HOME={tmp_path} has no bin/java"):
        check_java()


def test_spark_failures_become_one_line_naming_input_and_stage() -> None:
    trace = ("An error occurred while calling o42.parquet.\n: org.apache.spark.SparkException: Job aborted.\n"
             "\tat org.apache.spark.sql.execution.Foo(Foo.scala:12)\n")
    assert one_line(RuntimeError(trace)) == "An error occurred while calling o42.parquet."
    with pytest.raises(SparkJobError) as caught:
        with spark_errors("/data/pop.csv", "building weekly totals"):
            raise RuntimeError(trace)
    message = str(caught.value)
    assert message.startswith("/data/pop.csv: Spark failed while building weekly totals: ") and "\n" not in message
    with pytest.raises(KeyError):                          # a bug in cmsdl is not dressed up as a Spark failure
        with spark_errors("x", "y"):
            raise KeyError("not spark")


def test_pyspark_is_imported_only_inside_functions() -> None:
    """engine=local never loads pyspark: no cmsdl module imports it at module level."""
    found = []
    for path in (ROOT / "cmsdl").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in {"pyspark", "py4j"}]
    assert not found
    spark_modules = [p for p in (ROOT / "cmsdl" / "features").rglob("spark*.py")]
    assert len(spark_modules) == 3 and all("pyspark" in p.read_text() for p in spark_modules)


# ---- with Spark (slow: a JVM starts once per module) -------------------------------------------------------------

@pytest.fixture(scope="module")
def popularity_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark-pop") / "popularity.csv"
    write_popularity(path, simulate_popularity(n_datasets=150, n_weeks=14, seed=7, prehistory_weeks=6))
    lines = path.read_text().splitlines()
    lines[9] = "/A/B/AOD,AOD,3"                                         # wrong number of fields
    fields = lines[30].split(",")
    lines[30] = ",".join([*fields[:4], "lots", *fields[5:]])            # a field of the wrong type
    path.write_text("\ufeff" + "\n".join(lines) + "\n" + lines[40][:20])  # BOM, and a truncated last line
    return path


def assert_same_samples(spark_samples, local_samples) -> None:
    assert len(spark_samples) == len(local_samples) > 100
    assert spark_samples.datasets.tolist() == local_samples.datasets.tolist()
    assert spark_samples.weeks.tolist() == local_samples.weeks.tolist()
    assert spark_samples.tiers.tolist() == local_samples.tiers.tolist()
    np.testing.assert_allclose(spark_samples.values, local_samples.values, rtol=1e-9, atol=1e-9)
    assert spark_samples.labels.tolist() == local_samples.labels.tolist()
    np.testing.assert_allclose(spark_samples.size_gb, local_samples.size_gb, rtol=1e-12)


@pytest.mark.slow
@needs_spark
def test_popularity_samples_and_bad_rows_equal_the_local_engine(popularity_file: Path, tmp_path: Path) -> None:
    from cmsdl.features.popularity.spark import build_samples_spark

    rule = LabelRule("log_nusers", 1.0)
    table = load_popularity(popularity_file)
    totals = weekly_totals(table)
    built = build_samples_spark(str(popularity_file), rule, 3, 6, tmp_path / "samples.parquet", SETTINGS)
    assert_same_samples(built.samples, build_samples(totals, rule, 3, 6))
    assert built.uncovered == uncovered_per_week(totals, rule, 6)
    assert [(b.line, b.reason) for b in built.bad] == [(b.line, b.reason) for b in table.bad]
    assert [b.line for b in table.bad][0] == 10 and "truncated" in table.bad[-1].reason
    assert built.bad_counts == {str(popularity_file): len(table.bad)}
    import pyarrow.parquet as pq

    assert pq.read_table(built.table).num_rows == len(built.samples)   # the Parquet table is the samples


@pytest.mark.slow
@needs_spark
def test_popularity_from_two_files_and_an_unreadable_one(popularity_file: Path, tmp_path: Path) -> None:
    """Records split over files give the samples of one file; a missing input is reported and skipped."""
    lines = popularity_file.read_text(encoding="utf-8-sig").splitlines()[:-1]
    whole, first, second = tmp_path / "all.csv", tmp_path / "a.csv", tmp_path / "b.csv"
    whole.write_text("\n".join(lines) + "\n")
    first.write_text("\n".join(lines[:700]) + "\n")
    second.write_text("\n".join([lines[0], *lines[700:]]) + "\n")
    source = PopularitySource([str(first), str(tmp_path / "missing.csv"), str(second)], engine="spark",
                              spark=SPARK_BLOCK, table_out=str(tmp_path / "t.parquet"))
    samples, labels = source.load()
    assert_same_samples(samples, PopularitySource(str(whole)).load()[0])
    assert (tmp_path / "t.parquet").is_dir() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(InputFormatError, match="missing.csv: no such popularity file"):
        PopularitySource([str(tmp_path / "missing.csv")], engine="spark", spark=SPARK_BLOCK).load()


@pytest.mark.slow
@needs_spark
def test_spark_job_failure_is_one_line_naming_input_and_stage(tmp_path: Path) -> None:
    from cmsdl.features.popularity.spark import build_samples_spark

    pattern = str(tmp_path / "nothing-*.csv")
    with pytest.raises(SparkJobError) as caught:
        build_samples_spark(pattern, LabelRule(), 4, 8, tmp_path / "s.parquet", SETTINGS)
    message = str(caught.value)
    assert message.startswith(f"{pattern}: Spark failed while reading and checking the popularity records")
    assert "\n" not in message and "at org.apache" not in message
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("dataset,week\n/A/B/AOD,1\n")
    with pytest.raises(InputFormatError, match="header.csv: line 1 must be the header"):
        build_samples_spark(str(bad_header), LabelRule(), 4, 8, tmp_path / "s.parquet", SETTINGS)
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.slow
@needs_spark
def test_rolling_windows_give_the_same_auc_per_week_with_both_engines(popularity_file: Path, tmp_path: Path) -> None:
    from cmsdl.config import compose_run_config
    from cmsdl.tools.popularity import rolling_popularity

    metrics = {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        cfg = compose_run_config("popularity", [
            f"input={popularity_file}", f"out={out}", f"engine={engine}", "train_months=1.5", "max_windows=3",
            "dnn.epochs=2", "baselines.random_forest.n_estimators=8", "baselines.gradient_boosting.max_iter=10",
            "progress=false", "spark.master='local[2]'", "spark.shuffle_partitions=2"])
        rolling_popularity(cfg)
        with open(out / "metrics.csv") as handle:
            metrics[engine] = {(r["week"], r["model"]): (r["auc"], r["n"], r["n_popular"], r["n_new"], r["n_dormant"])
                               for r in csv.DictReader(handle)}
    assert len(metrics["local"]) == 3 * 4 and metrics["spark"].keys() == metrics["local"].keys()
    for key, (auc, *counts) in metrics["local"].items():
        assert metrics["spark"][key][1:] == tuple(counts), key
        assert float(metrics["spark"][key][0]) == pytest.approx(float(auc), abs=1e-6), key
    assert (tmp_path / "spark" / "features.parquet").is_dir()
    summary = json.loads((tmp_path / "spark" / "summary.json").read_text())
    assert summary["bad_records"] == len(load_popularity(popularity_file).bad)


@pytest.fixture(scope="module")
def transfer_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records, _ = simulate_transfers(n_transfers=240, seed=4)
    lines = [json.dumps(r) + "<EOR>" for r in records]
    lines[3] = lines[3].replace('"submit_time"', '"submitted"')                       # missing required field
    lines[11] = lines[11][:50] + "<EOR>"                                               # broken JSON
    lines[20] = json.dumps(records[20], indent=1) + "<EOR>"                            # a record over many lines
    lines[25] = json.dumps({**records[25], "params": {"streams": "four", "level": "7.5", "note": None,
                                                     "big": 10**400}}) + "<EOR>"
    lines[30] = json.dumps(records[30]) + "<EOR>" + json.dumps(records[31]) + "<EOR>"  # two records on one line
    path = tmp_path_factory.mktemp("spark-transfers") / "transfers.log"
    path.write_text("\n".join(lines) + "\n" + json.dumps(records[0])[:80])            # cut-off last record
    return path


@pytest.mark.slow
@needs_spark
def test_transfer_table_equals_the_local_flattening(transfer_log: Path, tmp_path: Path) -> None:
    from cmsdl.features.transfers.spark import flatten_logs_spark

    local_log = read_transfer_log(transfer_log)
    local = flatten_records(local_log.records)
    spark_log, table = flatten_logs_spark(str(transfer_log), tmp_path / "flat.parquet", SETTINGS)
    assert sorted(table.columns) == sorted(local.columns) and table.kinds == local.kinds
    assert table.kinds["params.streams"] == "text" and table.kinds["params.level"] == "number"
    assert (table.columns["params.level"] == 7.5).sum() == 1 and np.isinf(table.columns["params.big"]).sum() == 1
    for name, column in local.columns.items():
        np.testing.assert_allclose(table.columns[name], column, rtol=1e-12, err_msg=name)
    assert spark_log.lines == local_log.lines
    assert [r["tr_id"] for r in spark_log.records] == [r["tr_id"] for r in local_log.records]
    assert [(b.line, b.reason) for b in spark_log.bad] == [(b.line, b.reason) for b in sorted(local_log.bad, key=lambda b: b.line)]
    assert spark_log.n_bytes == local_log.n_bytes


@pytest.mark.slow
@needs_spark
def test_transfer_features_equal_the_local_engine(transfer_log: Path, tmp_path: Path) -> None:
    """Loaded, fitted (leaking, identifier, static columns dropped; correlated pairs: by Spark) and transformed alike."""
    local, spark = TransferSource(str(transfer_log)), TransferSource(str(transfer_log), engine="spark",
                                                                     spark=SPARK_BLOCK)
    (local_rows, local_y), (spark_rows, spark_y) = local.load(), spark.load()
    assert spark_rows == local_rows and spark_y.tolist() == local_y.tolist()
    local.fit(local_rows[:150])
    spark.fit(spark_rows[:150])
    assert spark.features.report == local.features.report and spark.feature_names == local.feature_names
    report = spark.features.report                          # static columns and correlated pairs found by Spark
    assert {"vo", "fts_host", "version"} <= set(report["static"]) and report["correlated"]
    assert spark.spark_table is not None and spark.spark_table.is_dir()
    np.testing.assert_allclose(spark.transform(spark_rows), local.transform(local_rows), rtol=1e-6)


def test_mllib_baseline_refuses_an_unknown_kind() -> None:
    from cmsdl.tools.spark_mllib import SparkClassifier

    with pytest.raises(ConfigError, match="kind 'svm' is not an MLlib classifier here"):
        SparkClassifier(kind="svm")
    SparkClassifier(kind="gradient_boosted_trees")          # building one starts no Spark (the config check does)


@pytest.mark.slow
@needs_spark
def test_mllib_baselines_fit_and_score_like_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    from cmsdl.tools.spark_mllib import SparkClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    for kind, params in (("random_forest", {"numTrees": 10, "maxDepth": 4}), ("decision_tree", {"maxDepth": 4}),
                         ("gradient_boosted_trees", {"maxIter": 10})):
        model = SparkClassifier(kind, params, seed=1, spark=SPARK_BLOCK).fit(x[:200], y[:200])
        probs = model.predict_proba(x[200:])
        assert probs.shape == (100, 2) and np.allclose(probs.sum(axis=1), 1.0)
        assert roc_auc_score(y[200:], probs[:, 1]) > 0.85, kind
