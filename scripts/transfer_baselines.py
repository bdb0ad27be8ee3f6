"""Random-forest and gradient-boosting baselines for the transfer studies, on the DNN's exact split and features.

    .venv/bin/python scripts/transfer_baselines.py data/transfers.log [--seed 12345]

Prints test AUC (latency class) and MAE / RMSE / R² (log10 latency) beside each other; compare with the DNN's
metrics.json from `cmsdl train experiment=transfer_class|transfer_latency` (same default seed and split).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from cmsdl.data.tabular import TabularDataModule
from cmsdl.data.transfer_features import TransferSource


def split(path: str, target: str, seed: int) -> tuple[np.ndarray, ...]:
    task = "classification" if target == "class" else "regression"
    data = TabularDataModule(TransferSource(path, target=target), seed=seed, task=task)
    data.setup()
    train, test = data.splits["train"], data.splits["test"]
    return train.features.numpy(), train.labels.numpy(), test.features.numpy(), test.labels.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    x, y, xt, yt = split(args.log, "class", args.seed)
    for name, model in (("random_forest", RandomForestClassifier(200, min_samples_leaf=3, random_state=0)),
                        ("gradient_boosting", HistGradientBoostingClassifier(random_state=0))):
        auc = roc_auc_score(yt, model.fit(x, y).predict_proba(xt), multi_class="ovr")
        print(f"class   {name:18} test AUC {auc:.3f}")
    x, y, xt, yt = split(args.log, "latency", args.seed)
    for name, model in (("random_forest", RandomForestRegressor(200, min_samples_leaf=3, random_state=0)),
                        ("gradient_boosting", HistGradientBoostingRegressor(random_state=0))):
        p = model.fit(x, y).predict(xt)
        rmse = float(np.sqrt(np.mean((p - yt) ** 2)))
        print(f"latency {name:18} test MAE {mean_absolute_error(yt, p):.3f} RMSE {rmse:.3f} R2 {r2_score(yt, p):.3f}")


if __name__ == "__main__":
    main()
