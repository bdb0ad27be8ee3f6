"""Classification reports: metrics, ROC curves in the physicists' form, confusion matrix and training curves as
PNGs, per-row predictions CSV.

ROC curves show signal efficiency against background rejection (1 / background efficiency, log axis), with the
events' weights where the data has them. The signal class is named explicitly (`signal=`); without one, every
class is drawn as signal against the rest, so that no class is chosen silently.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from cmsdl.errors import ConfigError, closest
from cmsdl.io import atomic_write, write_json

SIGNAL_EFFICIENCIES = (0.3, 0.5, 0.7)  # working points at which metrics.json gives the background rejection


def signal_index(class_names: Sequence[str], signal: str | None) -> int | None:
    """Index of the signal class (None when no signal is named); an unknown name is a one-line error."""
    if signal is None:
        return None
    if signal not in class_names:
        hint = closest(str(signal), class_names)
        raise ConfigError(f"signal: {signal!r} is not a class of this model" + (f" (did you mean {hint[0]!r}?)" if hint
                          else "") + f"; expected one of {', '.join(class_names)}")
    return list(class_names).index(signal)


def efficiency_curve(scores: np.ndarray, is_signal: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Signal efficiency and background efficiency for every cut on `scores` (weighted), and the weighted AUC."""
    bkg_eff, sig_eff, _ = roc_curve(is_signal, scores, sample_weight=weights, drop_intermediate=False)
    return sig_eff, bkg_eff, float(roc_auc_score(is_signal, scores, sample_weight=weights))


def background_rejection(sig_eff: np.ndarray, bkg_eff: np.ndarray, at: float) -> float:
    """1 / background efficiency at the first cut that keeps `at` of the signal (inf when no background passes)."""
    k = int(np.searchsorted(sig_eff, at))
    if k >= len(sig_eff):
        return float("nan")
    return 1.0 / bkg_eff[k] if bkg_eff[k] > 0 else math.inf


def signal_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], signal: int,
                   weights: np.ndarray | None) -> dict[str, Any]:
    """AUC of the signal class against all others and the background rejection at SIGNAL_EFFICIENCIES."""
    is_signal = labels == signal
    if is_signal.all() or not is_signal.any():
        return {"signal": class_names[signal], "auroc_signal": float("nan")}
    sig_eff, bkg_eff, auc = efficiency_curve(probs[:, signal], is_signal, weights)
    return {"signal": class_names[signal], "weighted": weights is not None, "auroc_signal": auc,
            "background_rejection": {f"{e:g}": background_rejection(sig_eff, bkg_eff, e) for e in SIGNAL_EFFICIENCIES}}


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                           weights: np.ndarray | None = None, signal: str | None = None) -> dict[str, Any]:
    """Accuracy, ROC AUC (one-vs-rest macro for several classes) and the confusion matrix; with `signal`, also its
    AUC against the rest and the background rejection, weighted by `weights` when given."""
    predicted = probs.argmax(axis=1)
    present = np.unique(labels)
    if len(present) < 2:
        auc = float("nan")
    elif len(class_names) == 2:
        auc = float(roc_auc_score(labels, probs[:, 1]))
    else:
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(len(class_names)))))
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(class_names))))
    metrics = {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "auroc": auc,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }
    if weights is not None:
        metrics["weighted_accuracy"] = float(np.average(predicted == labels, weights=weights))
    k = signal_index(class_names, signal)
    return metrics if k is None else {**metrics, **signal_metrics(probs, labels, class_names, k, weights)}


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


def plot_roc(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path, signal: str | None = None,
             weights: np.ndarray | None = None, title: str = "") -> Path:
    """Signal efficiency vs background rejection: the named signal against the rest, or each class in turn."""
    k = signal_index(class_names, signal)
    curves = {}
    for s in [k] if k is not None else range(len(class_names)):
        is_signal = labels == s
        if is_signal.all() or not is_signal.any():
            continue
        others = " + ".join(c for j, c in enumerate(class_names) if j != s)
        curves[f"{class_names[s]} vs {others}"] = efficiency_curve(probs[:, s], is_signal, weights)
    return plot_rejection(curves, path, title=f"ROC: {title}" if title else "ROC",
                          weighted=weights is not None)


def plot_rejection(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str,
                   weighted: bool = False, signal_name: str = "signal", background_name: str = "background") -> Path:
    """Curves of (signal efficiency, background efficiency, AUC) as signal efficiency vs background rejection."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, (sig_eff, bkg_eff, auc) in curves.items():
        passing = bkg_eff > 0
        ax.plot(sig_eff[passing], 1.0 / bkg_eff[passing], label=f"{label} (AUC {auc:.3f})")
    ax.plot(np.linspace(0.01, 1, 100), 1.0 / np.linspace(0.01, 1, 100), ls="--", c="grey", lw=1, label="random")
    note = ", events weighted" if weighted else ""
    ax.set(xlabel=f"{signal_name} efficiency", ylabel=f"{background_name} rejection (1 / efficiency{note})",
           yscale="log", xlim=(0, 1), title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize="small")
    return save_figure(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Confusion matrix normalised per true class (row), each cell with its fraction and its count."""
    plt = pyplot()
    m = np.asarray(matrix)
    fractions = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(class_names) + 2.5, 1.4 * len(class_names) + 2))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(m):
        ax.text(j, i, f"{fractions[i, j]:.1%}\n({value})", ha="center", va="center",
                color="white" if fractions[i, j] > 0.5 else "black")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names, xlabel="predicted",
           ylabel="true", title="confusion matrix, rows normalised" + (f"\n{title}" if title else ""))
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    return save_figure(fig, path)


def read_training_log(path: Path) -> dict[str, dict[int, float]]:
    """Per metric, its value per epoch from a Lightning CSV log (the mean of the values logged in the epoch); the
    learning rate and the final test metrics, which are no curves, are left out."""
    values: dict[str, dict[int, list[float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None) or key.startswith(("lr", "test/")):
                    continue
                values.setdefault(key, {}).setdefault(epoch, []).append(float(value))
    return {key: {e: float(np.mean(v)) for e, v in sorted(per_epoch.items())} for key, per_epoch in values.items()}


def plot_training_curves(log_path: Path, path: Path, title: str = "") -> Path | None:
    """Losses (left) and other metrics (right) per epoch from a run's csv/metrics.csv; None without a log."""
    if not log_path.is_file():
        return None
    curves = read_training_log(log_path)
    if not curves:
        return None
    plt = pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for key, per_epoch in curves.items():
        ax = loss_ax if "loss" in key else metric_ax
        ax.plot(list(per_epoch), list(per_epoch.values()), marker=".", label=key)
    for ax, name in ((loss_ax, "loss"), (metric_ax, "metric")):
        ax.set(xlabel="epoch", ylabel=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.suptitle("training curves" + (f": {title}" if title else ""))
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
                 ids: Sequence[str] | None = None, weights: np.ndarray | None = None, signal: str | None = None,
                 title: str = "", training_log: Path | None = None) -> dict[str, Any]:
    """metrics.json, roc.png, confusion.png, predictions.csv (and training_curves.png from `training_log` when it
    exists) in `out_dir`; returns the metrics. `title` names the run and split; the event count is added."""
    signal_index(class_names, signal)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(probs, labels, class_names, weights, signal)
    heading = f"{title}, {len(labels)} events" if title else f"{len(labels)} events"
    plot_roc(probs, labels, class_names, out_dir / "roc.png", signal, weights, heading)
    plot_confusion(metrics["confusion_matrix"], class_names, out_dir / "confusion.png", heading)
    if training_log is not None:
        plot_training_curves(training_log, out_dir / "training_curves.png", title)
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
