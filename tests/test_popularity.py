"""Popularity records: simulation, loader with bad-record reporting, labels, next-week samples, rolling windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.features.popularity.records import LabelRule, PopularityTable, load_popularity, weekly_totals, write_popularity
from cmsdl.features.popularity.source import (PopularitySamples, PopularitySource, build_samples, raw_columns,
                                            uncovered_per_week)
from cmsdl.errors import InputFormatError
from cmsdl.sim.popularity import TIER_COUNTS, format_tier_table, simulate_popularity, tier_table
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


def records(rows: list[tuple[str, int, int, int]]) -> PopularityTable:
    """A table from (dataset, creation week, week, reads) tuples, one site, AOD."""
    names = [f"/{name}/Run2016B-v1/AOD" for name, *_ in rows]
    naccess = np.array([n for *_, n in rows], dtype=np.int64)
    return PopularityTable({
        "dataset": np.array(names, dtype=object), "tier": np.array(["AOD"] * len(rows), dtype=object),
        "week": np.array([w for _, _, w, _ in rows], dtype=np.int64),
        "site": np.array(["T1_US_FNAL"] * len(rows), dtype=object),
        "naccess": naccess, "nusers": np.minimum(naccess, 3), "cpu_hours": naccess * 2.0,
        "size_gb": np.full(len(rows), 100.0), "nfiles": np.full(len(rows), 10, dtype=np.int64),
        "creation_week": np.array([c for _, c, _, _ in rows], dtype=np.int64)})


def candidate_weeks(samples: PopularitySamples, name: str) -> list[int]:
    return sorted(int(w) for d, w in zip(samples.datasets, samples.weeks) if d.startswith(f"/{name}/"))


def test_dataset_first_read_in_the_target_week_is_no_candidate() -> None:
    table = records([*(("Old", 0, w, 20) for w in range(8)),
                     ("New", 3, 3, 50), ("New", 3, 4, 5),          # created and first read in week 3
                     ("Late", 1, 5, 30), ("Late", 1, 6, 30)])       # created in week 1, first read in week 5
    totals = weekly_totals(table)
    samples = build_samples(totals, LabelRule(), lags=1, history_weeks=2)
    assert candidate_weeks(samples, "New") == [4, 5, 6]
    assert candidate_weeks(samples, "Late") == [6, 7]
    assert candidate_weeks(samples, "Old") == [1, 2, 3, 4, 5, 6, 7]
    uncovered = uncovered_per_week(totals, LabelRule(), history_weeks=2)
    assert uncovered[3] == {"n_new": 1, "n_new_popular": 1, "n_dormant": 0, "n_dormant_popular": 0}
    assert uncovered[5]["n_new"] == 1 and uncovered[5]["n_new_popular"] == 1 and uncovered[4]["n_new"] == 0


def test_dormant_dataset_read_again_is_counted_not_scored() -> None:
    table = records([*(("Old", 0, w, 20) for w in range(8)), ("Back", 0, 0, 15), ("Back", 0, 6, 12)])
    totals = weekly_totals(table)
    samples = build_samples(totals, LabelRule(), lags=1, history_weeks=2)
    assert candidate_weeks(samples, "Back") == [1, 2, 7]
    uncovered = uncovered_per_week(totals, LabelRule(), history_weeks=2)
    assert uncovered[6] == {"n_new": 0, "n_new_popular": 0, "n_dormant": 1, "n_dormant_popular": 1}


def test_a_later_size_does_not_reach_earlier_features() -> None:
    table = records([("Grows", 0, w, 20) for w in range(6)])
    table.columns["size_gb"][3:] = 900.0                               # the dataset grew in week 3
    samples = build_samples(weekly_totals(table), LabelRule(), lags=1, history_weeks=2)
    size = raw_columns(1).index("size_gb")
    assert samples.values[samples.weeks == 2, size].tolist() == [100.0]


def test_table1_counts_datasets_by_period_totals_with_column_shares() -> None:
    columns = records([*(("Steady", 0, w, 3) for w in range(5)),     # 15 reads, never more than 10 in a week
                       ("Burst", 0, 2, 40), ("Quiet", 1, 1, 4)]).columns
    user = columns["dataset"] == "/Quiet/Run2016B-v1/AOD"
    columns["tier"][user], columns["dataset"][user] = "USER", "/Quiet/Run2016B-v1/USER"
    rows = tier_table(columns, [LabelRule("naccess", 10.0), LabelRule("log_nusers", 2.0)])
    assert rows == [{"tier": "AOD", "no cut": 2, "naccess > 10": 2, "log(nusers) > 2": 0},
                    {"tier": "USER", "no cut": 1, "naccess > 10": 0, "log(nusers) > 2": 0},
                    {"tier": "ALL", "no cut": 3, "naccess > 10": 2, "log(nusers) > 2": 0}]
    lines = format_tier_table(rows)
    assert "AOD | 2 (66.67%) | 2 (100.00%) | 0 (0.00%)" in lines and "ALL | 3 | 2 | 0" in lines
    assert any(line.startswith("pass rate: naccess > 10 66.7% (seed 87.2%)") for line in lines)
    assert any(line.startswith("- naccess > 10: the dataset's reads summed over all sites and weeks") for line in lines)


def target_week_samples(table: PopularityTable, week: int) -> dict[str, np.ndarray]:
    samples = build_samples(weekly_totals(table), LabelRule(), lags=4, history_weeks=8)
    return {str(d): v for d, w, v in zip(samples.datasets, samples.weeks, samples.values) if w == week}


def test_changing_the_target_week_and_later_changes_neither_candidates_nor_features(records_file: Path) -> None:
    table = load_popularity(records_file)
    assert table.columns["week"].min() == 0
    target = 15
    columns = table.columns
    past = columns["week"] < target
    future_rows = np.flatnonzero(~past)[::2]                           # drop half of the future, change the rest
    changed = {k: np.concatenate([v[past], v[future_rows]]) for k, v in columns.items()}
    changed["naccess"][past.sum():] *= 7
    brand_new = {k: v[:1].copy() for k, v in changed.items()}
    brand_new.update(dataset=np.array(["/Brand/New-v1/AOD"], dtype=object), week=np.array([target]),
                     creation_week=np.array([target]), naccess=np.array([500]))
    changed = {k: np.concatenate([v, brand_new[k]]) for k, v in changed.items()}
    before = target_week_samples(table, target)
    assert all(len(v) == len(raw_columns(4)) for v in before.values())
    after = target_week_samples(PopularityTable(changed), target)
    assert len(before) > 50 and sorted(before) == sorted(after)
    for name, values in before.items():
        np.testing.assert_array_equal(values, after[name])
    created_recently = set(columns["dataset"][(columns["creation_week"] >= target - 8) & ~past])
    read_before = set(columns["dataset"][past & (columns["week"] >= target - 8)])
    assert created_recently - read_before, "the records should hold datasets first read in or after the target"
    assert not (created_recently - read_before) & set(before)


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


@pytest.mark.slow
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
    dnn_aucs = [float(r["auc"]) for r in rows if r["model"] == "dnn"]
    assert summary["models"]["dnn"]["auc_std_weeks"] == pytest.approx(float(np.std(dnn_aucs)), abs=1e-9)
    assert "mean ± std over weeks" in first.stdout
    assert all(int(r["n_new"]) >= int(r["n_new_popular"]) >= 0 for r in rows)
    candidates = summary["candidates"]
    assert candidates["n"] == sum(int(r["n"]) for r in rows if r["model"] == "dnn") and candidates["n_new"] > 0
    assert "not candidates, not scored" in first.stdout
    state_before = (out / "windows.jsonl").read_text()
    run_cmsdl(*args, cwd=tmp_path)                                     # everything done: nothing retrained
    assert (out / "windows.jsonl").read_text() == state_before
    old_rule = [json.loads(line) for line in state_before.splitlines()]
    (out / "windows.jsonl").write_text("".join(json.dumps({**w, "candidates": "read or created"}) + "\n"
                                               for w in old_rule))
    run_cmsdl(*args, cwd=tmp_path)                                     # windows of another candidate rule: redone
    assert (out / "windows.jsonl").read_text().count('"candidates": "read in the history weeks') == 2
    changed = run_cmsdl(*args[:-1], "label.threshold=5", cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "different configuration" in changed.stderr
