"""Transfer logs: marker-separated reader with bad-record reporting, flattener, feature choice, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmsdl.errors import InputFormatError
from cmsdl.features.transfers.records import flatten_records, naive_flatten_table, parse_transfer_log, read_transfer_log
from cmsdl.features.transfers.source import TransferFeatures, TransferSource, latency_targets
from cmsdl.sim.transfers import CLASSES, simulate_transfers, write_log
from tests.conftest import run_cmsdl


@pytest.fixture(scope="module")
def transfers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[str]]:
    records, classes = simulate_transfers(n_transfers=2500, seed=4)
    path = write_log(tmp_path_factory.mktemp("transfers") / "transfers.log", records)
    return path, records, classes


def test_reader_skips_and_reports_bad_records_by_line(tmp_path: Path) -> None:
    records, _ = simulate_transfers(n_transfers=40, seed=1)
    lines = [json.dumps(r) + "<EOR>" for r in records]
    lines[3] = lines[3].replace('"submit_time"', '"submitted"')                   # missing required field
    lines[7] = json.dumps({**records[7], "src": {"site": 42}}) + "<EOR>"           # wrong type
    lines[11] = lines[11][:50] + "<EOR>"                                           # broken JSON
    lines[15] = "[1, 2]<EOR>"                                                      # not an object
    multi = json.dumps(records[20], indent=1)                                      # a record over many lines
    lines[20] = multi + "<EOR>"
    text = "\n".join(lines) + "\n" + json.dumps(records[0])[:80]                   # cut-off last record
    log = parse_transfer_log(text, source="t.log")
    extra = multi.count("\n")
    assert [b.line for b in log.bad] == [4, 8, 12, 16, 41 + extra]
    assert "submit_time" in log.bad[0].reason and "src.site" in log.bad[1].reason
    assert "truncated" in log.bad[-1].reason and len(log.records) == 36
    assert "line 12" in log.bad_summary()


def test_custom_marker_and_empty_log(tmp_path: Path) -> None:
    records, _ = simulate_transfers(n_transfers=5, seed=2)
    path = write_log(tmp_path / "a.log", records, marker="%%END%%")
    assert len(read_transfer_log(path, marker="%%END%%").records) == 5
    with pytest.raises(InputFormatError, match="a.log: no good records ending in '<EOR>'"):
        read_transfer_log(path)


def test_flattener_matches_the_naive_table(transfers) -> None:
    path, records, _ = transfers
    table = flatten_records(records)
    names, rows = naive_flatten_table(path.read_text().splitlines())
    assert sorted(table.columns) == names and "src.site" in names and "retries.len" in names
    np.testing.assert_allclose(table.matrix(names, -1.0), np.array(rows))
    assert table.kinds["src.site"] == "text" and table.kinds["file.bytes"] == "number"


def test_features_drop_leaking_identifier_and_static_columns(transfers) -> None:
    _, records, _ = transfers
    table = flatten_records(records)
    features = TransferFeatures()
    report = features.fit(table, np.arange(2000))
    assert {"end_time", "start_time", "tx_duration", "failures", "final_state"} <= set(report["leaking"])
    assert "retries.len" in report["leaking"] and "tr_id" in report["identifiers"]
    assert {"vo", "fts_host", "version"} <= set(report["static"])
    assert ["block.bytes", "block.nfiles"] in [sorted(p[:2]) for p in report["correlated"]]
    assert not set(features.columns) & (set(report["leaking"]) | set(report["static"]) | set(report["identifiers"]))
    assert 0.3 < report["feature_bytes"] / report["table_bytes"] < 0.7
    x = features.transform_records(records[:100])
    np.testing.assert_array_equal(x, features.transform(table)[:100])
    assert (x == -1.0).any()                                                     # placeholders for missing values


def test_targets_recover_the_simulated_classes(transfers) -> None:
    _, records, classes = transfers
    latency, predicted, valid = latency_targets(flatten_records(records), 4.0, 1.0)
    assert valid.all() and (latency > 0).all()
    assert [CLASSES[k] for k in predicted] == classes


def test_source_state_round_trip(transfers) -> None:
    path, records, _ = transfers
    source = TransferSource(str(path), target="latency")
    rows, y = source.load()
    assert y.dtype == np.float32 and source.class_names == ["log10_latency_s"]
    source.fit(rows[:1500])
    state = json.loads(json.dumps(source.state_dict()))
    assert state["kind"] == "transfers" and state["marker"] == "<EOR>"
    fresh = TransferFeatures()
    fresh.load_state_dict(state["features"])
    np.testing.assert_array_equal(fresh.transform_records(records[:20]), source.transform(rows[:20]))


def test_train_and_evaluate_transfer_class(transfers, tmp_path: Path) -> None:
    path, _, _ = transfers
    run_cmsdl("train", "experiment=transfer_class", f"data.source.path={path}", f"paths.log_dir={tmp_path}",
              "trainer=cpu", "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0", cwd=tmp_path)
    summary = json.loads(next(tmp_path.glob("train/runs/*/metrics.json")).read_text())
    assert 0.5 < summary["metrics"]["test/auroc"] <= 1
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    pre = ckpt["cmsdl"]["preprocessing"]
    assert pre["kind"] == "tabular" and pre["source"]["kind"] == "transfers"
    assert pre["class_names"] == list(CLASSES) and len(pre["mean"]) == len(pre["feature_names"])
    run_cmsdl("eval", f"ckpt={summary['last_checkpoint']}", f"paths.log_dir={tmp_path}", "accelerator=cpu",
              cwd=tmp_path)
    assert json.loads(next(tmp_path.glob("eval/**/metrics.json")).read_text())["n"] > 300


def test_train_transfer_latency_regression(transfers, tmp_path: Path) -> None:
    path, _, _ = transfers
    run_cmsdl("train", "experiment=transfer_latency", f"data.source.path={path}", f"paths.log_dir={tmp_path}",
              "trainer=cpu", "trainer.max_epochs=4", "data.batch_size=64", "callbacks.progress_bar.refresh_rate=0",
              cwd=tmp_path)
    summary = json.loads(next(tmp_path.glob("train/runs/*/metrics.json")).read_text())
    metrics = summary["metrics"]
    assert {"test/mae", "test/rmse", "test/r2"} <= set(metrics) and metrics["test/mae"] < 2.0
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["cmsdl"]["preprocessing"]["task"] == "regression"
