"""Tree baselines on the same rows as the networks: gradient boosting fitted on a DataModule's training split (with
its event weights), and the seed's three transfer models (random forest, gradient boosting, XGBoost) with their
training time and peak memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier,
                              RandomForestRegressor)

from cmsdl.errors import ConfigError

TREE_MODELS = ("random_forest", "gradient_boosting", "xgboost")
TASKS = ("classification", "regression")


def split_arrays(datamodule: Any, split: str, max_rows: int | None = None) -> tuple[np.ndarray, ...]:
    """Features, labels and weights (ones when the data has none) of a split, as the loader gives them."""
    xs, ys, ws = [], [], []
    for batch in datamodule.split_loader(split):
        xs.append(batch[0].numpy())
        ys.append(batch[1].numpy())
        ws.append(batch[2].numpy() if len(batch) > 2 else np.ones(len(batch[1]), np.float32))
        if max_rows and sum(map(len, ys)) >= max_rows:
            break
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    return (x[:max_rows], y[:max_rows], w[:max_rows]) if max_rows else (x, y, w)


def fit_boosting(datamodule: Any, max_rows: int | None = 500_000, seed: int = 0,
                 **params: Any) -> HistGradientBoostingClassifier:
    """A boosted-trees classifier on the training split (early stopping on an internal 10% hold-out)."""
    x, y, w = split_arrays(datamodule, "train", max_rows)
    settings = {"max_iter": 500, "learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": True,
                "validation_fraction": 0.1, "random_state": seed, **params}
    return HistGradientBoostingClassifier(**settings).fit(x, y, sample_weight=w)


def tree_model(name: str, task: str, seed: int = 0, threads: int = 1) -> Any:
    """An unfitted random forest (200 trees), gradient boosting (scikit-learn's histogram GBT) or XGBoost (200 hist
    trees, depth 6, learning rate 0.1) classifier or regressor, on `threads` cores."""
    if name not in TREE_MODELS or task not in TASKS:
        raise ConfigError(f"tree model: got {name!r} for {task!r}, expected one of {', '.join(TREE_MODELS)} "
                          f"for one of {', '.join(TASKS)}")
    classify = task == "classification"
    if name == "random_forest":
        forest = RandomForestClassifier if classify else RandomForestRegressor
        return forest(n_estimators=200, min_samples_leaf=3, n_jobs=threads, random_state=seed)
    if name == "gradient_boosting":
        boosting = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return boosting(random_state=seed)
    import xgboost

    xgb = xgboost.XGBClassifier if classify else xgboost.XGBRegressor
    return xgb(n_estimators=200, max_depth=6, learning_rate=0.1, tree_method="hist", n_jobs=threads, random_state=seed)


class FitCost(NamedTuple):
    """What a fit cost: wall seconds, and the peak resident memory above the resident memory before it (MB)."""

    seconds: float
    peak_mb: float


def fit_measured(model: Any, x: np.ndarray, y: np.ndarray) -> FitCost:
    """Fit `model` and measure it; peak memory from Linux's VmHWM after resetting it (NaN elsewhere)."""
    status = Path("/proc/self/status")
    before = _vm_kib(status, "VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")    # VmHWM := VmRSS
    except OSError:
        before = float("nan")
    start = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - start
    return FitCost(seconds, (_vm_kib(status, "VmHWM") - before) / 1024)


def _vm_kib(status: Path, key: str) -> float:
    """A Vm* value (KiB) of /proc/self/status, NaN where there is none."""
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return float("nan")
    return next((float(line.split()[1]) for line in lines if line.startswith(key + ":")), float("nan"))
