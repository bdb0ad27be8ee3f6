"""Popularity records: simulation, loader with bad-record reporting, labels, next-week samples, rolling windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.popularity import LabelRule, load_popularity, weekly_totals, write_popularity
from cmsdl.data.popularity_features import PopularitySource, build_samples, raw_columns
from cmsdl.data.popularity_sim import TIER_COUNTS, simulate_popularity
from cmsdl.errors import InputFormatError
from tests.conftest import run_cmsdl


@pytest.fixture(scope="module")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("popularity") / "popularity.csv"
    write_popularity(path, simulate_popularity(n_datasets=500, n_weeks=24, seed=5))
    return path


def test_simulated_records_round_trip_with_realistic_shape(records_file: Path) -> None:
    table = load_popularity(records_file)
    assert not table.bad and len(table) > 1000
    assert set(table["tier"]) <= set(TIER_COUNTS) and {"AODSIM", "USER"} <= set(table["tier"])
    assert (table["week"] >= table["creation_week"]).all()
    per_dataset = np.bincount(np.unique(table["dataset"], return_inverse=True)[1], weights=table["naccess"])
    assert per_dataset.max() > 20 * np.median(per_dataset)          # heavy tail
    names = table["dataset"]
    assert all(n.startswith("/") and n.count("/") == 3 and n.endswith("/" + t) for n, t in zip(names, table["tier"]))


def test_bad_records_are_counted_with_line_numbers(records_file: Path, tmp_path: Path) -> None:
    lines = records_file.read_text().splitlines()[:200]
    good = lines[5].split(",")
    lines[10] = ",".join(good[:-2])                                   # missing fields
    lines[20] = ",".join(good[:4] + ["lots"] + good[5:])               # wrong type
    lines[30] = ",".join(good[:2] + ["-999"] + good[3:])                 # read before creation
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n" + lines[40][:25])          # truncated last line
    table = load_popularity(path)
    assert [b.line for b in table.bad] == [11, 21, 31, 201]
    assert "naccess" in table.bad[1].reason and "truncated" in table.bad[3].reason
    assert len(table) == 199 - 3
    assert "line 21" in table.bad_summary()


def test_wrong_header_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name,week\n/a/b/AOD,1\n")
    with pytest.raises(InputFormatError, match="x.csv: line 1 must be the header dataset,tier,week"):
        load_popularity(path)


def test_label_rules() -> None:
    naccess, nusers, cpu = np.array([10, 11, 50]), np.array([7, 8, 2]), np.zeros(3)
    assert LabelRule().apply(naccess, nusers, cpu).tolist() == [False, True, True]
    assert LabelRule("log_nusers", 2.0).apply(naccess, nusers, cpu).tolist() == [False, True, False]


def test_samples_use_only_weeks_before_the_target(records_file: Path) -> None:
    table = load_popularity(records_file)
    totals = weekly_totals(table)
    samples = build_samples(totals, LabelRule(), lags=4, history_weeks=8)
    assert samples.values.shape[1] == len(raw_columns(4)) and 0.005 < samples.labels.mean() < 0.5
    target = 15
    before = samples.select(samples.weeks == target)
    totals.naccess[:, target - totals.first_week:] *= 7                # change the future only
    after = build_samples(totals, LabelRule(), lags=4, history_weeks=8)
    after = after.select(after.weeks == target)
    np.testing.assert_array_equal(before.values, after.values)
    assert list(before.datasets) == list(after.datasets)


def test_source_state_describes_features(records_file: Path) -> None:
    source = PopularitySource(str(records_file))
    samples, labels = source.load()
    source.fit([samples[i] for i in range(0, len(samples), 3)])
    x = source.transform(samples)
    assert x.shape == (len(samples), len(source.feature_names)) and np.isfinite(x).all()
    state = json.loads(json.dumps(source.state_dict()))
    assert state["kind"] == "popularity" and state["format"] == "cmsdl-popularity/1"
    other = PopularitySource("unused.csv")
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.transform([samples[i] for i in range(50)]), x[:50])


def test_rolling_window_command_reports_every_model_and_resumes(records_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rolling"
    args = ["popularity", f"input={records_file}", f"out={out}", "train_months=3", "max_windows=2",
            "dnn.epochs=3", "baselines.random_forest.n_estimators=10", "baselines.gradient_boosting.max_iter=20",
            "progress=false"]
    first = run_cmsdl(*args, cwd=tmp_path)
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    models = {"dnn", "random_forest", "gradient_boosting", "decision_tree"}
    weeks = sorted({int(r["week"]) for r in rows})
    assert len(weeks) == 2 and {r["model"] for r in rows} == models
    assert all(0.5 < float(r["auc"]) <= 1 and 0 <= float(r["fpr"]) <= 1 and float(r["tb_per_1pct_fpr"]) > 0
               for r in rows)
    assert "AUC dnn" in first.stdout and (out / "windows.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == models
    state_before = (out / "windows.jsonl").read_text()
    run_cmsdl(*args, cwd=tmp_path)                                     # everything done: nothing retrained
    assert (out / "windows.jsonl").read_text() == state_before
    changed = run_cmsdl(*args[:-1], "label.threshold=5", cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "different configuration" in changed.stderr
