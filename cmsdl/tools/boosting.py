"""Gradient-boosting baseline on the same rows as the networks: sklearn's HistGradientBoostingClassifier fitted
on a DataModule's training split (with its event weights), scored on another split in the loader's order."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier


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
