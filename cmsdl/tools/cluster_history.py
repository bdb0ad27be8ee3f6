"""Rolling k-means over a history of workflow snapshots, and how stable the clusters stay from fit to fit.

At each snapshot, k-means is fitted on the workflows of the last `history` snapshots (the seed keeps "the cluster
characteristics stable by including the stored workflow error patterns ... over the past few months"). Two
consecutive fits are compared on the workflows both were fitted on: the adjusted Rand index of their labels, and
a one-to-one matching of their clusters (Hungarian assignment on the distance between centroids, both computed in
the newer fit's feature space) with the share of shared workflows that stay in matched clusters. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from cmsdl.features.workflows.history import Snapshot, window
from cmsdl.features.workflows.records import Workflow
from cmsdl.features.workflows.source import WorkflowMatrix
from cmsdl.io import atomic_write
from cmsdl.report import pyplot, save_figure

STABILITY_COLUMNS = ("date", "snapshots", "workflows", "k", "silhouette", "shared", "ari", "matched_share",
                     "centroid_distance")


@dataclass
class Fit:
    """One k-means fit: its workflows, feature pipeline, features and labels."""

    workflows: list[Workflow]
    matrix: WorkflowMatrix
    features: np.ndarray
    labels: np.ndarray
    k: int
    silhouette: float
    scores: dict[int, float] = field(default_factory=dict)


def centroids(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids present in `labels` and the mean feature row of each."""
    ids = np.unique(labels)
    return ids, np.stack([features[labels == c].mean(axis=0) for c in ids])


def match_clusters(before: Fit, after: Fit) -> list[dict[str, Any]]:
    """Hungarian matching of `before`'s clusters to `after`'s, on centroid distances in `after`'s feature space."""
    old_ids, old_centres = centroids(after.matrix.transform(before.workflows), before.labels)
    new_ids, new_centres = centroids(after.features, after.labels)
    cost = np.linalg.norm(old_centres[:, None, :] - new_centres[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    return [{"previous": int(old_ids[r]), "current": int(new_ids[c]), "distance": round(float(cost[r, c]), 4)}
            for r, c in zip(rows, cols)]


def stability(before: Fit, after: Fit) -> dict[str, Any]:
    """ARI on the shared workflows, the cluster matching, and the share of shared workflows in matched clusters."""
    old = {wf.name: int(c) for wf, c in zip(before.workflows, before.labels)}
    new = {wf.name: int(c) for wf, c in zip(after.workflows, after.labels)}
    shared = [name for name in new if name in old]
    matching = match_clusters(before, after)
    partner = {m["previous"]: m["current"] for m in matching}
    result: dict[str, Any] = {"shared": len(shared), "matching": matching,
                              "centroid_distance": round(float(np.mean([m["distance"] for m in matching])), 4)}
    if len(shared) >= 2:
        result["ari"] = round(float(adjusted_rand_score([old[n] for n in shared], [new[n] for n in shared])), 4)
        result["matched_share"] = round(float(np.mean([partner.get(old[n]) == new[n] for n in shared])), 4)
    else:
        result["ari"] = result["matched_share"] = None
    return result


def rolling_fits(
    snapshots: Sequence[Snapshot], history: int, fit: Callable[[list[Workflow]], Fit]
) -> tuple[list[dict[str, Any]], Fit]:
    """Fit at every snapshot on its window; per fit a record with its stability against the previous fit."""
    records, previous = [], None
    for end, snapshot in enumerate(snapshots):
        current = fit(window(snapshots, end, history))
        first = max(0, end - history + 1)
        record: dict[str, Any] = {
            "date": snapshot.day.isoformat(),
            "snapshots": [s.path.name for s in snapshots[first:end + 1]],
            "workflows": len(current.workflows), "k": current.k, "silhouette": round(current.silhouette, 4),
        }
        if previous is not None:
            record.update(stability(previous, current))
        records.append(record)
        previous = current
    return records, previous


def write_stability_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with atomic_write(path) as handle:
        handle.write(",".join(STABILITY_COLUMNS) + "\n")
        for r in records:
            row = {**r, "snapshots": len(r["snapshots"])}
            handle.write(",".join("" if row.get(c) is None else str(row[c]) for c in STABILITY_COLUMNS) + "\n")


def plot_stability(path: Path, records: Sequence[dict[str, Any]], history: int) -> Path:
    """ARI and matched share between consecutive fits, per snapshot date."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    pairs = [r for r in records if r.get("ari") is not None]
    dates = [date.fromisoformat(r["date"]) for r in pairs]
    ax.plot(dates, [r["ari"] for r in pairs], marker="o", label="adjusted Rand index (shared workflows)")
    ax.plot(dates, [r["matched_share"] for r in pairs], marker="s", label="shared workflows in matched clusters")
    ax.set(ylim=(-0.05, 1.05), xlabel="snapshot date", ylabel="agreement with the previous fit",
           title=f"k-means stability, fits on the last {history} snapshot(s)")
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
