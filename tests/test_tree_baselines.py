"""The seed's three transfer models (random forest, gradient boosting, XGBoost) with their cost, and the script that
compares them with the majority-class rate on the DNN's split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cmsdl.errors import ConfigError
from cmsdl.sim.transfers import simulate_transfers, write_log
from cmsdl.tools.boosting import TREE_MODELS, fit_measured, tree_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_tree_model_fits_and_reports_time_and_peak_memory(task: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int) if task == "classification" else x[:, 0] * 2 + x[:, 1]
    assert TREE_MODELS == ("random_forest", "gradient_boosting", "xgboost")
    for name in TREE_MODELS:
        model = tree_model(name, task, seed=1)
        with threadpool_limits(limits=1):
            cost = fit_measured(model, x, y)
        assert cost.seconds > 0 and (np.isnan(cost.peak_mb) or cost.peak_mb >= 0)
        predicted = model.predict(x[:500])
        quality = np.mean(predicted == y[:500]) if task == "classification" else np.corrcoef(predicted, y[:500])[0, 1]
        assert quality > 0.9, name


PEAK_PROBE = """
import numpy as np
from cmsdl.tools.boosting import fit_measured

class Hungry:
    def fit(self, x, y):
        block = np.ones(50_000_000, np.uint8)  # 50 MB touched, then freed
        assert block.sum() == len(block)

print(fit_measured(Hungry(), np.zeros((1, 1)), np.zeros(1)).peak_mb)
"""


def test_peak_memory_sees_a_large_allocation_inside_the_fit() -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory needs Linux /proc")
    # a fresh interpreter: the peak is then not blurred by what the test session allocated and freed before
    probe = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, check=True)
    assert float(probe.stdout.strip()) > 40


def test_unknown_model_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="'lightgbm'.*random_forest, gradient_boosting, xgboost"):
        tree_model("lightgbm", "classification")


@pytest.mark.slow
def test_script_reports_xgboost_beside_the_majority_class_rate(tmp_path: Path) -> None:
    records, _ = simulate_transfers(n_transfers=1500, seed=3)
    log = tmp_path / "transfers.log"
    write_log(log, records)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "transfer_baselines.py"), str(log)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    majority = next(line for line in lines if line.startswith("| always the majority class (normal)"))
    assert 0.6 < float(majority.split("|")[3]) < 0.95
    for name in TREE_MODELS:
        rows = [line.split("|") for line in lines if line.startswith(f"| {name} |")]
        assert len(rows) == 2, name                                     # class and latency tables
        assert 0.5 < float(rows[0][2]) <= 1 and float(rows[0][5]) > 0   # AUC, fit seconds
    assert any(line.startswith("| always the training mean |") for line in lines)
