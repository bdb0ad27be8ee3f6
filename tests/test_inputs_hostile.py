"""Hostile and broken computing-metadata inputs (issue 15, items 10 and 11): one table of bad inputs per reader.

Each case is a file a careless user or an attacker could hand to cmsdl: overflowing numbers, deep nesting, a
spreadsheet's byte-order mark. Every one must end as a skipped-and-reported record or one error line naming the
file, the record and the field; never a traceback, and never NaN features to train on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.tabular import TabularDataModule
from cmsdl.errors import InputFormatError
from cmsdl.features.popularity.records import load_popularity, weekly_totals, write_popularity
from cmsdl.features.transfers.source import TransferSource
from cmsdl.features.workflows.records import load_workflows
from cmsdl.features.workflows.source import WorkflowActionSource
from cmsdl.sim.popularity import simulate_popularity
from cmsdl.sim.transfers import simulate_transfers, write_log
from cmsdl.sim.workflows import simulate_workflows
from tests.conftest import run_cmsdl

BOM = b"\xef\xbb\xbf"
DEEP = '{"a":' * 5000 + "1" + "}" * 5000
HUGE_INT = "1" + "0" * 5000  # beyond Python's 4300-digit limit for int(text)

# ---------------------------------------------------------------------------------------------- transfer logs
BAD_TRANSFERS = [
    # (description, record 6 of the log as text, expected in the report of line 6)
    ("a size beyond float32", lambda r: json.dumps({**r, "file": {**r["file"], "bytes": 1e40}}),
     "field 'file.bytes' is 1e+40, beyond float32"),
    ("a size beyond float64 (JSON reads inf)", lambda r: json.dumps({**r, "file": {"bytes": 271828}}).replace(
        "271828", "1e400"), "field 'file.bytes' is inf"),
    ("an Infinity literal", lambda r: json.dumps({**r, "params": {"streams": float("inf")}}),
     "field 'params.streams' is inf"),
    ("a 400-digit integer", lambda r: json.dumps({**r, "params": {"streams": 10**400}}),
     "field 'params.streams' is inf"),
    ("a 5000-digit integer", lambda r: json.dumps({**r, "params": {"streams": 271828}}).replace(
        "271828", HUGE_INT), "field 'params.streams' is inf"),
    ("a negative end time beyond float32", lambda r: json.dumps({**r, "end_time": -3e39}),
     "field 'end_time' is -3e+39"),
    ("nesting deeper than Python's recursion limit", lambda r: json.dumps({**r, "params": 0}).replace(
        '"params": 0', f'"params": {DEEP}'), "not valid JSON (nested deeper than"),
]


@pytest.mark.parametrize("description, spoil, expected", BAD_TRANSFERS, ids=[c[0] for c in BAD_TRANSFERS])
def test_bad_transfer_records_are_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    description: str, spoil, expected: str) -> None:
    records, _ = simulate_transfers(n_transfers=40, seed=1)
    lines = [json.dumps(r) + "<EOR>" for r in records]
    lines[5] = spoil(records[5]) + "<EOR>"
    path = tmp_path / "t.log"
    path.write_text("\n".join(lines) + "\n")
    source = TransferSource(str(path), target="latency", log_target=False)
    with caplog.at_level(logging.WARNING):
        rows, target = source.load()
    report = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path}: skipped 1 bad records (line 6: {expected}" in report, description
    assert len(rows) == 39 and records[5]["tr_id"] not in {r.name for r in rows}
    source.fit(rows)
    assert np.isfinite(source.transform(rows)).all() and np.isfinite(target).all()


def test_a_poisoned_record_never_reaches_training_as_nan(tmp_path: Path) -> None:
    records, _ = simulate_transfers(n_transfers=200, seed=2)
    records[7]["file"]["bytes"] = 1e40
    data = TabularDataModule(TransferSource(str(write_log(tmp_path / "t.log", records)), target="latency"),
                             task="regression")
    data.setup()
    for split in data.splits.values():
        assert torch_finite(split.features) and torch_finite(split.labels)
    assert np.isfinite(data.mean).all() and np.isfinite(data.std).all()


def torch_finite(tensor) -> bool:
    return bool(tensor.isfinite().all())


def test_a_bom_transfer_log_keeps_its_first_record(tmp_path: Path) -> None:
    records, _ = simulate_transfers(n_transfers=12, seed=3)
    path = tmp_path / "bom.log"
    path.write_bytes(BOM + write_log(tmp_path / "plain.log", records).read_bytes())
    source = TransferSource(str(path))
    rows, _ = source.load()
    assert [r.name for r in rows] == [r["tr_id"] for r in records]


# ---------------------------------------------------------------------------------------------- workflow JSON
def _workflows_with(change) -> dict:
    doc = simulate_workflows(n_workflows=12, seed=1)
    change(doc["workflows"][3])
    return doc


def _set_count(count) -> callable:
    def change(wf: dict) -> None:
        errors = wf["tasks"][0]["errors"]
        code = next(iter(errors))
        errors[code][next(iter(errors[code]))] = count
    return change


def _set_code(code: str) -> callable:
    def change(wf: dict) -> None:
        errors = wf["tasks"][0]["errors"]
        errors[code] = errors.pop(next(iter(errors)))
    return change


BAD_WORKFLOWS = [
    ("a count beyond 64 bits", _set_count(10**30), "count 1000000000000000000000000000000 does not fit in 64 bits"),
    ("a 5000-digit count", _set_count("HUGE"), "expected a non-negative integer count, got inf"),
    ("a float count", _set_count(1e300), "expected a non-negative integer count, got 1e+300"),
    ("an exit code beyond 64 bits", _set_code("9" * 30), f"exit code '{'9' * 30}' is not an integer"),
    ("an exit code with underscores", _set_code("1_000"), "exit code '1_000' is not an integer"),
    ("a deeply nested action", lambda wf: wf.update(action=json.loads('[' * 500 + ']' * 500)),
     "field 'action' is [[[[...]]]], expected one of"),
    ("a deeply nested document", "DEEP", "not usable JSON (nested deeper than"),
]


@pytest.mark.parametrize("description, change, expected", BAD_WORKFLOWS, ids=[c[0] for c in BAD_WORKFLOWS])
def test_bad_workflow_values_are_one_line_naming_workflow_and_field(tmp_path: Path, description: str, change,
                                                                    expected: str) -> None:
    path = tmp_path / "wf.json"
    if change == "DEEP":
        path.write_text('{"workflows": ' + "[" * 5000 + "]" * 5000 + "}")
    else:
        doc = _workflows_with(change)
        path.write_text(json.dumps(doc).replace('"HUGE"', HUGE_INT))
    with pytest.raises(InputFormatError) as err:
        load_workflows(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message, description
    if change != "DEEP":
        assert f"workflow '{doc['workflows'][3]['name']}'" in message


def test_a_bom_workflow_file_is_read(tmp_path: Path) -> None:
    doc = simulate_workflows(n_workflows=5, seed=1)
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + json.dumps(doc).encode())
    assert [wf.name for wf in load_workflows(path)] == [wf["name"] for wf in doc["workflows"]]


def test_a_single_class_dataset_is_refused_in_one_line(tmp_path: Path) -> None:
    doc = simulate_workflows(n_workflows=200, seed=1)
    for wf in doc["workflows"]:
        wf["action"] = "acdc"
    path = tmp_path / "acdc.json"
    path.write_text(json.dumps(doc))
    data = TabularDataModule(WorkflowActionSource(str(path)))
    with pytest.raises(InputFormatError, match=rf"{path}: every record has class 'acdc'; .* at least two of"):
        data.setup()
    proc = run_cmsdl("train", "experiment=workflow_actions", f"data.source.path={path}", f"paths.log_dir={tmp_path}",
                     "trainer=cpu", cwd=tmp_path, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "class 'acdc'" in errors[0] and str(path) in errors[0]


# ---------------------------------------------------------------------------------------------- popularity CSV
BAD_POPULARITY = [
    ("a week beyond 64 bits", "week", "99999999999999999999", "field 'week' is '99999999999999999999', beyond 64-bit"),
    ("a count beyond 64 bits", "naccess", "9223372036854775808", "field 'naccess' is '9223372036854775808', beyond"),
    ("a 5000-digit count", "nusers", HUGE_INT, "field 'nusers' is '1000"),
    ("a non-ASCII digit", "nfiles", "\u00b2", "field 'nfiles' is '\u00b2', expected a non-negative integer"),
    ("a negative count", "nusers", "-3", "field 'nusers' is '-3', expected a non-negative integer"),
    ("a size beyond float32", "size_gb", "1e39", "field 'size_gb' is '1e39', beyond float32"),
    ("a field over the csv size limit", "dataset", "x" * 200_000, "not readable as CSV (field larger than field limit"),
]


@pytest.mark.parametrize("description, column, value, expected", BAD_POPULARITY, ids=[c[0] for c in BAD_POPULARITY])
def test_bad_popularity_rows_are_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   description: str, column: str, value: str, expected: str) -> None:
    plain = write_popularity(tmp_path / "plain.csv", simulate_popularity(n_datasets=20, n_weeks=6, seed=5))
    lines = plain.read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[4].split(",")
    fields[header.index(column)] = value
    lines[4] = ",".join(fields)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        table = load_popularity(path)
    report = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path}: skipped 1 bad records (line 5: {expected}" in report, description
    assert len(table) == len(lines) - 2 and len(report) < 1000


def test_a_bom_popularity_csv_is_read(tmp_path: Path) -> None:
    plain = write_popularity(tmp_path / "plain.csv", simulate_popularity(n_datasets=20, n_weeks=6, seed=5))
    path = tmp_path / "bom.csv"
    path.write_bytes(BOM + plain.read_bytes())
    assert len(load_popularity(path)) == len(load_popularity(plain)) and not load_popularity(path).bad


def test_weeks_spread_over_ages_are_one_line_not_a_huge_grid(tmp_path: Path) -> None:
    plain = write_popularity(tmp_path / "plain.csv", simulate_popularity(n_datasets=20, n_weeks=6, seed=5))
    lines = plain.read_text().splitlines()
    fields = lines[4].split(",")
    fields[2] = "4000000000000000000"
    lines[4] = ",".join(fields)
    path = tmp_path / "far.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError, match=rf"{path}: field 'week' spans weeks 0 to 4000000000000000000"):
        weekly_totals(load_popularity(path))
