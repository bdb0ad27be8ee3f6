"""`cmsdl cluster-workflows`: k-means on the per-workflow error-code x site-status matrices (the seed's tool).

Sites are collapsed into good/bad, so workflows with the same errors at different sites land together.
Writes assignments.csv (workflow, cluster, action), clusters.json (per-cluster summary) and config.yaml.
With several snapshots in `input` (a directory or glob, see cmsdl.features.workflows.history) or with `history` set,
k-means is refitted at every snapshot on the last `history` snapshots and the stability between consecutive fits
goes to stability.csv, stability.json and stability.png; assignments and clusters are then those of the latest fit.
With `compress.components`, k-means runs in a truncated-SVD space of the error x site matrix. Imports no torch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from cmsdl.cms import EXIT_CODES
from cmsdl.errors import ConfigError
from cmsdl.features.workflows.history import check_history, load_snapshots, snapshot_paths
from cmsdl.features.workflows.records import Workflow, load_workflows
from cmsdl.features.workflows.source import WorkflowMatrix
from cmsdl.io import atomic_write, write_config, write_json
from cmsdl.tools.cluster_history import Fit, plot_stability, rolling_fits, write_stability_csv

log = logging.getLogger(__name__)
SILHOUETTE_SAMPLE = 3000


@dataclass
class Clustering:
    labels: np.ndarray
    k: int
    silhouette: float
    scores: dict[int, float]


def _fit(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(features)
    if len(np.unique(labels)) < 2:
        return labels, -1.0
    size = min(len(features), SILHOUETTE_SAMPLE)
    return labels, float(silhouette_score(features, labels, sample_size=size, random_state=seed))


def kmeans(features: np.ndarray, k: int | str, k_min: int = 2, k_max: int = 12, seed: int = 0) -> Clustering:
    """K-means with a fixed k, or with the k in [k_min, k_max] that has the best silhouette score."""
    n = len(features)
    if k == "auto":
        candidates = range(max(2, k_min), min(k_max, n - 1) + 1)
    elif isinstance(k, int) and 1 <= k <= n:
        candidates = range(k, k + 1)
    else:
        raise ConfigError(f"k: got {k!r}, expected 'auto' or an integer between 1 and the {n} workflows")
    if not candidates:
        raise ConfigError(f"k_min/k_max: no k to try in [{k_min}, {k_max}] for {n} workflows")
    results = {c: _fit(features, c, seed) for c in candidates}
    best = max(results, key=lambda c: results[c][1])
    return Clustering(results[best][0], best, results[best][1], {c: r[1] for c, r in results.items()})


def summarize(workflows: Sequence[Workflow], labels: np.ndarray, top_codes: int = 3) -> list[dict[str, Any]]:
    """Per cluster: size, most frequent exit codes (by failed jobs), share of failures at bad sites, actions."""
    summary = []
    for cluster in np.unique(labels):
        members = [wf for wf, c in zip(workflows, labels) if c == cluster]
        jobs: Counter[int] = Counter()
        bad_jobs = 0
        for wf in members:
            for e in wf.errors:
                jobs[e.code] += e.count
                bad_jobs += e.count if e.site_bad else 0
        total = sum(jobs.values()) or 1
        summary.append({
            "cluster": int(cluster),
            "workflows": len(members),
            "top_codes": [
                {"code": code, "share": round(n / total, 3), "meaning": EXIT_CODES.get(code, "")}
                for code, n in jobs.most_common(top_codes)
            ],
            "bad_site_share": round(bad_jobs / total, 3),
            "actions": dict(Counter(wf.action or "unknown" for wf in members).most_common()),
        })
    return sorted(summary, key=lambda row: -row["workflows"])


def format_summary(summary: list[dict[str, Any]]) -> str:
    lines = [f"{'cluster':>7} {'workflows':>9} {'bad sites':>9}  top exit codes (share of failed jobs)  actions"]
    for row in summary:
        codes = ", ".join(f"{c['code']} ({c['share']:.0%})" for c in row["top_codes"])
        actions = " ".join(f"{a}:{n}" for a, n in row["actions"].items())
        lines.append(f"{row['cluster']:>7} {row['workflows']:>9} {row['bad_site_share']:>9.0%}  {codes:<38} {actions}")
    return "\n".join(lines)


def fit_workflows(workflows: list[Workflow], cfg: DictConfig) -> Fit:
    """Feature pipeline (matrix, optional SVD) and k-means fitted on `workflows`."""
    if len(workflows) < 3:
        raise ConfigError(f"input: {cfg.input} has {len(workflows)} workflows; clustering needs at least 3")
    components = (cfg.get("compress") or {}).get("components")
    matrix = WorkflowMatrix(**cfg.matrix, svd_components=components, seed=cfg.seed).fit(workflows)
    features = matrix.transform(workflows)
    result = kmeans(features, cfg.k, cfg.k_min, cfg.k_max, cfg.seed)
    return Fit(workflows, matrix, features, result.labels, result.k, result.silhouette, result.scores)


def cluster_workflows(cfg: DictConfig) -> dict[str, Any]:
    """Cluster the workflows of cfg.input (one fit, or rolling fits over snapshots) and write them into cfg.out."""
    history = check_history(cfg.get("history"))
    paths = snapshot_paths(cfg.input)
    if history is not None or len(paths) > 1:
        return cluster_history(cfg, history or 1)
    fit = fit_workflows(load_workflows(paths[0]), cfg)
    report = write_clusters(cfg, fit)
    print(f"{format_fit(fit, report)}\nwritten to {cfg.out}/")
    return report


def cluster_history(cfg: DictConfig, history: int) -> dict[str, Any]:
    """Rolling fits over the snapshots of cfg.input, their stability, and the latest fit's clusters."""
    snapshots = load_snapshots(cfg.input)
    records, latest = rolling_fits(snapshots, history, lambda workflows: fit_workflows(workflows, cfg))
    out = Path(cfg.out)
    report = write_clusters(cfg, latest)
    write_stability_csv(out / "stability.csv", records)
    write_json(out / "stability.json", {"history": history, "fits": records})
    plot_stability(out / "stability.png", records, history)
    for r in records:
        ari = "" if r.get("ari") is None else f", ARI vs previous fit {r['ari']:.3f} on {r['shared']} shared workflows"
        print(f"{r['date']}: {len(r['snapshots'])} snapshot(s), {r['workflows']} workflows, k={r['k']}{ari}")
    aris = [r["ari"] for r in records if r.get("ari") is not None]
    if aris:
        print(f"mean ARI between consecutive fits (history={history}): {np.mean(aris):.3f}")
    print(f"latest fit ({records[-1]['date']}): {format_fit(latest, report)}\nwritten to {out}/")
    return {**report, "history": history, "stability": records}


def format_fit(fit: Fit, report: dict[str, Any]) -> str:
    return (f"k-means on {len(fit.workflows)} workflows x {fit.features.shape[1]} features: k={fit.k}, "
            f"silhouette={fit.silhouette:.3f}\n{format_summary(report['clusters'])}")


def write_clusters(cfg: DictConfig, fit: Fit) -> dict[str, Any]:
    """assignments.csv, clusters.json and config.yaml of one fit."""
    workflows, features, result = fit.workflows, fit.features, fit
    summary = summarize(workflows, result.labels, cfg.top_codes)
    out = Path(cfg.out)
    with atomic_write(out / "assignments.csv") as handle:
        handle.write("workflow,cluster,action\n")
        handle.writelines(f"{wf.name},{c},{wf.action or ''}\n" for wf, c in zip(workflows, result.labels))
    report = {"k": result.k, "silhouette": result.silhouette, "silhouette_by_k": result.scores,
              "n_workflows": len(workflows), "n_features": features.shape[1], "clusters": summary}
    write_json(out / "clusters.json", report)
    write_config(out / "config.yaml", cfg)
    return report
