"""The seed's three tree models for the transfer studies (random forest, gradient boosting, XGBoost), on the DNN's
exact split and features, with training time and peak memory.

    .venv/bin/python scripts/transfer_baselines.py data/transfers.log [--seed 12345] [--threads 1]
        [--dnn-class <run>/metrics.json] [--dnn-latency <run>/metrics.json]

Latency class: test AUC (one-vs-rest, macro), accuracy beside the majority-class rate (always answering the
training split's most frequent class) and balanced accuracy. log10 latency: MAE / RMSE / R² beside always
answering the training mean. Each model is fitted in a fresh process on the same arrays, on `--threads` cores:
training seconds and peak resident memory above the process's memory before the fit (Linux VmHWM). The same default
seed gives the split of `cmsdl train experiment=transfer_class|transfer_latency`; their metrics.json files add the
DNN's row. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from cmsdl.features.transfers.source import CLASSES
from cmsdl.tools.boosting import TREE_MODELS, fit_measured, tree_model

TARGETS = {"class": "classification", "latency": "regression"}


def split(path: str, target: str, seed: int) -> tuple[np.ndarray, ...]:
    """Train and test features and targets, exactly as TabularDataModule splits and scales them for the DNN."""
    from cmsdl.data.tabular import TabularDataModule
    from cmsdl.features.transfers.source import TransferSource

    data = TabularDataModule(TransferSource(path, target=target), seed=seed, task=TARGETS[target])
    data.setup()
    train, test = data.splits["train"], data.splits["test"]
    return train.features.numpy(), train.labels.numpy(), test.features.numpy(), test.labels.numpy()


def fit_and_predict(name: str, task: str, arrays: str, seed: int, threads: int) -> tuple[np.ndarray, float, float]:
    """In a fresh process: fit one model on the saved training arrays; test predictions, seconds, peak MB."""
    from threadpoolctl import threadpool_limits

    data = np.load(arrays)
    with threadpool_limits(limits=threads):
        model = tree_model(name, task, seed=seed, threads=threads)
        cost = fit_measured(model, data["x"], data["y"])
        predicted = model.predict_proba(data["xt"]) if task == "classification" else model.predict(data["xt"])
    return predicted, cost.seconds, cost.peak_mb


def fit_each(arrays: tuple[np.ndarray, ...], task: str, seed: int, threads: int) -> dict[str, tuple]:
    """Every tree model, each in its own fresh process (so that peak memory is its own)."""
    x, y, xt, _ = arrays
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "arrays.npz")
        np.savez(path, x=x, y=y, xt=xt)
        for name in TREE_MODELS:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                results[name] = pool.submit(fit_and_predict, name, task, path, seed, threads).result()
    return results


def class_rows(arrays: tuple[np.ndarray, ...], results: dict[str, tuple], dnn: Path | None) -> list[str]:
    """Markdown rows: AUC, accuracy, balanced accuracy, seconds, MB per model, the majority class first."""
    _, y, _, yt = arrays
    majority = np.bincount(y).argmax()
    rows = [f"| always the majority class ({CLASSES[majority]}) | 0.500 | {np.mean(yt == majority):.3f} | 0.333 | | |"]
    for name, (proba, seconds, peak) in results.items():
        predicted = proba.argmax(axis=1)
        rows.append(f"| {name} | {roc_auc_score(yt, proba, multi_class='ovr'):.3f} | {np.mean(predicted == yt):.3f} | "
                    f"{balanced_accuracy_score(yt, predicted):.3f} | {seconds:.1f} | {peak:.0f} |")
    if dnn:
        m = json.loads(dnn.read_text())["metrics"]
        rows.append(f"| DNN ({dnn.parent.name}) | {m['test/auroc']:.3f} | {m['test/acc']:.3f} | | | |")
    header = "| latency class | AUC | accuracy | balanced accuracy | fit s | peak MB |"
    return [header, "|---|---:|---:|---:|---:|---:|", *rows]


def latency_rows(arrays: tuple[np.ndarray, ...], results: dict[str, tuple], dnn: Path | None) -> list[str]:
    """Markdown rows: MAE, RMSE, R², seconds, MB per model, the training mean first."""
    _, y, _, yt = arrays

    def scores(p: np.ndarray) -> str:
        rmse = float(np.sqrt(np.mean((p - yt) ** 2)))
        return f"{mean_absolute_error(yt, p):.3f} | {rmse:.3f} | {r2_score(yt, p):.3f}"

    rows = [f"| always the training mean | {scores(np.full(len(yt), y.mean()))} | | |"]
    rows += [f"| {name} | {scores(p)} | {seconds:.1f} | {peak:.0f} |" for name, (p, seconds, peak) in results.items()]
    if dnn:
        m = json.loads(dnn.read_text())["metrics"]
        rows.append(f"| DNN ({dnn.parent.name}) | {m['test/mae']:.3f} | {m['test/rmse']:.3f} | {m['test/r2']:.3f} | | |")
    return ["| log10 latency | MAE | RMSE | R² | fit s | peak MB |", "|---|---:|---:|---:|---:|---:|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--seed", type=int, default=12345, help="split seed (the DNN's default)")
    parser.add_argument("--threads", type=int, default=1, help="cores per model")
    parser.add_argument("--dnn-class", type=Path, help="metrics.json of `cmsdl train experiment=transfer_class`")
    parser.add_argument("--dnn-latency", type=Path, help="metrics.json of `... experiment=transfer_latency`")
    args = parser.parse_args()
    arrays = split(args.log, "class", args.seed)
    print(f"{len(arrays[1])} training and {len(arrays[3])} test transfers, {arrays[0].shape[1]} features, "
          f"{args.threads} thread(s) per model, each fitted in a fresh process\n")
    print("\n".join(class_rows(arrays, fit_each(arrays, "classification", 0, args.threads), args.dnn_class)) + "\n")
    arrays = split(args.log, "latency", args.seed)
    print("\n".join(latency_rows(arrays, fit_each(arrays, "regression", 0, args.threads), args.dnn_latency)))


if __name__ == "__main__":
    main()
