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


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """ROC curve (one per class, one-vs-rest, when there are more than two classes)."""
    plt = _figure()
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
    return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrix with counts; rows are true classes, columns predicted ones."""
    plt = _figure()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.2 * len(class_names) + 2))
    ax.imshow(m, cmap="Blues")
    for (i, j), value in np.ndenumerate(m):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > m.max() / 2 else "black")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
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
