"""scripts/seed_repeats.py: AUC mean ± std over weeks and over seeds, from real (tiny) runs of the commands."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cmsdl.features.popularity.records import write_popularity
from cmsdl.sim.popularity import simulate_popularity

REPO = Path(__file__).resolve().parents[1]


def load_script() -> object:
    spec = importlib.util.spec_from_file_location("seed_repeats", REPO / "scripts" / "seed_repeats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_std_over_weeks_and_over_seeds_are_different_spreads() -> None:
    summary = load_script().summarise({"dnn": {1: {10: 0.9, 11: 0.8}, 2: {10: 0.7, 11: 0.6}}})["dnn"]
    assert summary["auc"] == pytest.approx(0.75)
    assert summary["std_weeks"] == pytest.approx(0.0707, abs=1e-4)      # weeks 10, 11: 0.8 and 0.7
    assert summary["std_seeds"] == pytest.approx(0.1414, abs=1e-4)      # seeds 1, 2: 0.85 and 0.65
    assert (summary["n_weeks"], summary["n_seeds"]) == (2, 2)


def test_popular_datasets_that_were_no_candidates_count_as_missed() -> None:
    script = load_script()
    counts: dict[str, float] = {}
    script.count_errors(counts, {"n": "100", "n_popular": "10", "fnr": "0.2", "fpr": "0.1", "n_new_popular": "5",
                                 "n_dormant_popular": "1"})
    script.count_errors(counts, {"n": "50", "n_popular": "0", "fnr": "nan", "fpr": "0.0"})    # an older run's row
    rates = script.error_rates(counts)
    assert rates["fnr"] == pytest.approx(0.2) and rates["fpr"] == pytest.approx(9 / 140)
    assert rates["fnr_all_popular"] == pytest.approx((2 + 6) / 16) and rates["popular_not_candidates"] == 6


@pytest.mark.slow
def test_popularity_repeats_run_the_command_once_per_seed(tmp_path: Path) -> None:
    data = tmp_path / "popularity.csv"
    write_popularity(data, simulate_popularity(n_datasets=300, n_weeks=20, seed=2))
    args = [sys.executable, str(REPO / "scripts" / "seed_repeats.py"), "popularity", "--input", str(data),
            "--out", str(tmp_path / "out"), "--seeds", "1", "2", "--", "train_months=3", "max_windows=2",
            "dnn.epochs=2", "baselines={}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "repeats.json").read_text())
    dnn = report["models"]["dnn"]
    assert (dnn["n_seeds"], dnn["n_weeks"]) == (2, 2) and 0.5 < dnn["auc"] <= 1 and len(set(dnn["per_seed"])) == 2
    assert "± std over weeks" in proc.stdout and (tmp_path / "out" / "seed2" / "metrics.csv").is_file()


@pytest.mark.slow
def test_data_seeds_simulate_the_data_once_each(tmp_path: Path) -> None:
    args = [sys.executable, str(REPO / "scripts" / "seed_repeats.py"), "popularity", "--data-seeds", "3", "4",
            "--seeds", "1", "--out", str(tmp_path / "out"), "--simulate", "n_datasets=300", "n_weeks=20", "--",
            "train_months=3", "max_windows=2", "dnn.epochs=2", "baselines={}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = [(tmp_path / "out" / f"data{d}" / "popularity.csv").read_text() for d in (3, 4)]
    assert data[0] != data[1] and all(len(text.splitlines()) > 100 for text in data)
    dnn = json.loads((tmp_path / "out" / "repeats.json").read_text())["models"]["dnn"]
    assert dnn["n_seeds"] == 2 and len(set(dnn["per_seed"])) == 2
