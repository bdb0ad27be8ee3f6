"""Classification reports: metrics, confusion matrix and ROC curve PNGs, per-row predictions CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from cmsdl.io import atomic_write, write_json


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, ROC AUC (one-vs-rest macro for several classes) and the confusion matrix."""
    predicted = probs.argmax(axis=1)
    present = np.unique(labels)
    if len(present) < 2:
        auc = float("nan")
    elif len(class_names) == 2:
        auc = float(roc_auc_score(labels, probs[:, 1]))
    else:
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(len(class_names)))))
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(class_names))))
    return {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "auroc": auc,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def seed_table_cells(metrics: dict[str, Any]) -> str:
    """Accuracy and confusion matrix as the seed's event-classification table prints them: 95% [[1815 72] [89 1700]]."""
    rows = " ".join("[" + " ".join(str(v) for v in row) + "]" for row in metrics["confusion_matrix"])
    return f"{100 * metrics['accuracy']:.0f}% [{rows}]"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (writes files, needs no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """ROC curve (one per class, one-vs-rest, when there are more than two classes)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    positives = [1] if len(class_names) == 2 else range(len(class_names))
    for k in positives:
        if len(np.unique(labels == k)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
        auc = roc_auc_score(labels == k, probs[:, k])
        ax.plot(fpr, tpr, label=f"{class_names[k]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrix with counts; rows are true classes, columns predicted ones."""
    plt = pyplot()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.2 * len(class_names) + 2))
    ax.imshow(m, cmap="Blues")
    for (i, j), value in np.ndenumerate(m):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > m.max() / 2 else "black")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def write_predictions(path: Path, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      ids: Sequence[str] | None = None) -> Path:
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "true", "predicted", *[f"p_{c}" for c in class_names]])
        for i, (p, y) in enumerate(zip(probs, labels)):
            writer.writerow([ids[i] if ids else i, class_names[y], class_names[int(p.argmax())],
                             *[f"{v:.6f}" for v in p]])
    return path


def write_report(out_dir: Path, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 ids: Sequence[str] | None = None) -> dict[str, Any]:
    """metrics.json, roc.png, confusion.png and predictions.csv in `out_dir`; returns the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(probs, labels, class_names)
    plot_roc(probs, labels, class_names, out_dir / "roc.png")
    plot_confusion(metrics["confusion_matrix"], class_names, out_dir / "confusion.png")
    write_predictions(out_dir / "predictions.csv", probs, labels, class_names, ids)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def regression_metrics(predictions: np.ndarray, targets: np.ndarray, target_names: Sequence[str]) -> dict[str, Any]:
    """MAE, RMSE and R² per target (and their mean over targets)."""
    p, t = predictions.reshape(len(predictions), -1), targets.reshape(len(targets), -1)
    per_target = {}
    for k, name in enumerate(target_names):
        error = p[:, k] - t[:, k]
        variance = float(((t[:, k] - t[:, k].mean()) ** 2).sum())
        per_target[name] = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
                            "r2": 1 - float((error ** 2).sum()) / variance if variance > 0 else float("nan")}
    means = {m: float(np.mean([v[m] for v in per_target.values()])) for m in ("mae", "rmse", "r2")}
    return {"n": int(len(t)), **means, "targets": per_target}


def plot_predicted_vs_true(predictions: np.ndarray, targets: np.ndarray, name: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(targets, predictions, s=4, alpha=0.4)
    lo, hi = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    ax.plot([lo, hi], [lo, hi], ls="--", c="grey", lw=1)
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title="predicted vs true")
    return save_figure(fig, path)


def write_regression_report(out_dir: Path, predictions: np.ndarray, targets: np.ndarray,
                            target_names: Sequence[str], ids: Sequence[str] | None = None) -> dict[str, Any]:
    """metrics.json, predicted_vs_true.png and predictions.csv in `out_dir`; returns the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p, t = predictions.reshape(len(predictions), -1), targets.reshape(len(targets), -1)
    metrics = regression_metrics(p, t, target_names)
    plot_predicted_vs_true(p[:, 0], t[:, 0], target_names[0], out_dir / "predicted_vs_true.png")
    with atomic_write(out_dir / "predictions.csv", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *[f"true_{n}" for n in target_names], *[f"predicted_{n}" for n in target_names]])
        for i in range(len(t)):
            writer.writerow([ids[i] if ids else i, *[f"{v:.6g}" for v in t[i]], *[f"{v:.6g}" for v in p[i]]])
    write_json(out_dir / "metrics.json", metrics)
    return metrics
