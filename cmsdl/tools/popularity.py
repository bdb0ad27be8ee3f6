"""`cmsdl popularity`: the seed's rolling window. Train on the previous N months, predict the next week, move on.

For every target week the tabular DNN and the scikit-learn baselines (random forest, gradient boosting,
decision tree) are trained on the same window and scored with AUC, FPR and FNR; the cost reading is the TB of
extra transfers that 1% FPR means that week (1% of the unpopular candidates times their mean size).
Candidates are the datasets read in the weeks before the target week; datasets read in the target week that are
no candidates (new ones, dormant ones) are counted in every row and in the summary, not scored.
Each finished week is appended to ``windows.jsonl``, so a stopped run continues where it was.
Outputs in ``out``: metrics.csv, summary.json, windows.png, predictions.csv, config.yaml, windows.jsonl.
With ``engine=spark`` the samples are built by Spark (cmsdl.features.popularity.spark) from one or many inputs and
kept in ``out/features.parquet``; the windows are trained and scored exactly as with ``engine=local``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from cmsdl.config import instantiate_logged, to_plain
from cmsdl.errors import BadRecord, ConfigError
from cmsdl.features.popularity.records import LabelRule, load_popularity, weekly_totals
from cmsdl.features.popularity.source import PopularitySamples, build_samples, feature_matrix, uncovered_per_week
from cmsdl.features.spark_session import SparkSettings, check_engine
from cmsdl.io import atomic_write, write_config, write_json

log = logging.getLogger(__name__)
DNN = "dnn"
STATE = "windows.jsonl"
FEATURES = "features.parquet"  # engine=spark: the samples table
# how the candidates of a target week are chosen; windows.jsonl entries of another rule are recomputed
CANDIDATES = "read in the history weeks before the target week"
UNCOVERED = ("n_new", "n_new_popular", "n_dormant", "n_dormant_popular")


def window_weeks(weeks: np.ndarray, train_weeks: int, step: int, max_windows: int | None) -> list[int]:
    """Target weeks that have a full training window before them."""
    first, last = int(weeks.min()), int(weeks.max())
    targets = list(range(first + train_weeks, last + 1, step))
    if not targets:
        raise ConfigError(f"train_months: a window of {train_weeks} weeks leaves no week to predict in weeks "
                          f"{first}..{last}; use a shorter window or more weeks of data")
    return targets[:max_windows] if max_windows else targets


def rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, FPR and FNR at `threshold` (NaN where a class is absent)."""
    predicted = probs >= threshold
    pos, neg = labels == 1, labels == 0
    auc = float(roc_auc_score(labels, probs)) if pos.any() and neg.any() else float("nan")
    fpr = float((predicted & neg).sum() / neg.sum()) if neg.any() else float("nan")
    fnr = float((~predicted & pos).sum() / pos.sum()) if pos.any() else float("nan")
    return {"auc": auc, "fpr": fpr, "fnr": fnr}


def transfer_cost(labels: np.ndarray, probs: np.ndarray, size_gb: np.ndarray, threshold: float) -> dict[str, float]:
    """TB of extra transfers per 1% FPR this week, and TB actually moved for the false positives."""
    neg = labels == 0
    per_percent = 0.01 * neg.sum() * (size_gb[neg].mean() if neg.any() else 0.0) / 1000.0
    extra = size_gb[neg & (probs >= threshold)].sum() / 1000.0
    return {"tb_per_1pct_fpr": float(per_percent), "extra_tb": float(extra)}


def train_dnn(cfg: DictConfig, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A fresh MLP (cfg.net) trained with Adam on one window; returns a predict_proba-like callable."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    net = instantiate(cfg.net, in_features=x.shape[1], out_features=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    positives = max(int(y.sum()), 1)
    pos_weight = torch.tensor((len(y) - positives) / positives if cfg.balanced else 1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    net.train()
    for _ in range(cfg.epochs):
        for rows in torch.randperm(len(yt), generator=generator).split(cfg.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(net(xt[rows]).reshape(-1), yt[rows])
            loss.backward()
            optimizer.step()
    net.eval()

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.from_numpy(features)).reshape(-1)).numpy()

    return predict


def run_window(cfg: DictConfig, samples: PopularitySamples, week: int, train_weeks: int,
               uncovered: dict[str, int]) -> dict[str, Any]:
    """Train every model on the weeks before `week` and score them on `week`; `uncovered` goes into each row."""
    train = samples.select((samples.weeks < week) & (samples.weeks >= week - train_weeks))
    test = samples.select(samples.weeks == week)
    tiers = sorted(set(train.tiers))
    x_train, x_test = feature_matrix(train.values, train.tiers, tiers), feature_matrix(test.values, test.tiers, tiers)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    probs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if len(np.unique(train.labels)) < 2:
        raise ConfigError(f"week {week}: the training window holds only one class; change label or train_months")
    probs[DNN] = train_dnn(cfg.dnn, x_train, train.labels, cfg.seed + week)(x_test)
    seconds[DNN] = time.perf_counter() - start
    for name, model_cfg in (cfg.baselines or {}).items():
        start = time.perf_counter()
        model = instantiate(model_cfg).fit(x_train, train.labels)
        probs[name] = model.predict_proba(x_test)[:, 1]
        seconds[name] = time.perf_counter() - start
    rows = [{"week": week, "model": name, "n_train": len(train), "n": len(test), "n_popular": int(test.labels.sum()),
             **rates(test.labels, p, cfg.decision_threshold),
             **transfer_cost(test.labels, p, test.size_gb, cfg.decision_threshold), "fit_s": seconds[name],
             **{key: uncovered.get(key, 0) for key in UNCOVERED}}
            for name, p in probs.items()]
    predictions = {"datasets": test.datasets.tolist(), "labels": test.labels.tolist(),
                   "size_gb": np.round(test.size_gb, 1).tolist(),
                   "probs": {name: np.round(p, 5).tolist() for name, p in probs.items()}}
    return {"week": week, "candidates": CANDIDATES, "rows": rows, "predictions": predictions}


def finished_windows(out: Path) -> dict[int, dict[str, Any]]:
    """Windows already written by an earlier attempt (a cut-off last line and other candidate rules are ignored)."""
    done: dict[int, dict[str, Any]] = {}
    path = out / STATE
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                if entry.get("candidates") == CANDIDATES:
                    done[int(entry["week"])] = entry
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return done


def check_resumable(cfg: DictConfig, out: Path) -> None:
    """An out directory with windows of another configuration is not silently mixed with this one."""
    saved = out / "config.yaml"
    if not (out / STATE).is_file() or not saved.is_file():
        return
    old, new = OmegaConf.load(saved), OmegaConf.create(to_plain(cfg))
    for key in ("resume", "max_windows", "engine", "spark"):  # the engines build the same samples
        old.pop(key, None), new.pop(key, None)
    if old != new:
        raise ConfigError(f"out: {out} holds windows of a different configuration; use another out or resume=false")


def write_outputs(out: Path, windows: list[dict[str, Any]], bad: list[Any]) -> dict[str, Any]:
    """metrics.csv, predictions.csv, windows.png and summary.json from all finished windows."""
    rows = [row for w in windows for row in w["rows"]]
    with atomic_write(out / "metrics.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_predictions(out / "predictions.csv", windows)
    plot_windows(out / "windows.png", rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    summary = {"weeks": [w["week"] for w in windows], "candidates": candidate_summary(windows), "models": {},
               "bad_records": len(bad), "bad_lines": [b.line for b in bad[:100]]}
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        summary["models"][m] = {k: float(np.nanmean([r[k] for r in mine])) for k in
                                ("auc", "fpr", "fnr", "tb_per_1pct_fpr", "extra_tb", "fit_s")}
        summary["models"][m]["auc_std_weeks"] = float(np.nanstd([r["auc"] for r in mine]))
    write_json(out / "summary.json", summary)
    return summary


def candidate_summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over all target weeks: candidates scored, and datasets read but not candidates (new, dormant)."""
    first_rows = [w["rows"][0] for w in windows]
    totals = {key: int(sum(r[key] for r in first_rows)) for key in ("n", "n_popular", *UNCOVERED)}
    popular = totals["n_popular"] + totals["n_new_popular"] + totals["n_dormant_popular"]
    return {"rule": CANDIDATES, **totals,
            "popular_not_candidates_share": (popular - totals["n_popular"]) / popular if popular else 0.0}


def write_predictions(path: Path, windows: list[dict[str, Any]]) -> None:
    """One row per (dataset, week): the truth, the size and every model's probability of popular."""
    models = list(windows[0]["predictions"]["probs"])
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["dataset", "week", "label", "size_gb", *(f"p_{m}" for m in models)])
        for w in windows:
            p = w["predictions"]
            columns = [p["datasets"], [w["week"]] * len(p["labels"]), p["labels"], p["size_gb"],
                       *(p["probs"][m] for m in models)]
            writer.writerows(zip(*columns))


def plot_windows(path: Path, rows: list[dict[str, Any]]) -> None:
    """AUC, FPR and FNR per target week, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for ax, key in zip(axes, ("auc", "fpr", "fnr")):
            ax.plot([r["week"] for r in mine], [r[key] for r in mine], marker=".", label=model)
    from matplotlib.ticker import MaxNLocator

    for ax, name in zip(axes, ("AUC (area under the ROC curve)", "false positive rate", "false negative rate")):
        ax.set(xlabel="target week", ylabel=name, title=f"{name} per week")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def print_table(summary: dict[str, Any], windows: list[dict[str, Any]]) -> None:
    models = list(summary["models"])
    print("week | " + " | ".join(f"AUC {m}" for m in models) + " | FPR dnn | FNR dnn | TB per 1% FPR")
    for w in windows:
        by_model = {r["model"]: r for r in w["rows"]}
        d = by_model[DNN]
        print(f"{w['week']} | " + " | ".join(f"{by_model[m]['auc']:.3f}" for m in models)
              + f" | {d['fpr']:.3f} | {d['fnr']:.3f} | {d['tb_per_1pct_fpr']:.1f}")
    print("mean ± std over weeks | " + " | ".join(
        f"{summary['models'][m]['auc']:.3f} ± {summary['models'][m]['auc_std_weeks']:.3f}" for m in models))
    for m, s in summary["models"].items():
        print(f"{m}: AUC {s['auc']:.3f} ± {s['auc_std_weeks']:.3f} (over weeks), FPR {s['fpr']:.3f}, FNR {s['fnr']:.3f}, "
              f"{s['tb_per_1pct_fpr']:.1f} TB of transfers per 1% FPR, {s['fit_s']:.2f} s per window")
    c = summary["candidates"]
    print(f"candidates ({c['rule']}): {c['n']} dataset-weeks, {c['n_popular']} popular; not candidates, not "
          f"scored: {c['n_new']} new datasets ({c['n_new_popular']} popular), {c['n_dormant']} dormant "
          f"({c['n_dormant_popular']} popular): {100 * c['popular_not_candidates_share']:.1f}% of the popular "
          "dataset-weeks")


def popularity_samples(cfg: DictConfig, rule: LabelRule, out: Path
                       ) -> tuple[PopularitySamples, dict[int, dict[str, int]], list[BadRecord]]:
    """Samples, uncovered counts per week and skipped rows of cfg.input, built by cfg.engine (local or spark)."""
    lags, history = cfg.features.lags, cfg.features.history_weeks
    if check_engine(cfg.get("engine", "local"), "engine") == "spark":
        from cmsdl.features.popularity.spark import build_samples_spark

        inputs = to_plain(cfg.input) if OmegaConf.is_list(cfg.input) else str(cfg.input)
        built = build_samples_spark(inputs, rule, lags, history, out / FEATURES,
                                    SparkSettings.from_config(to_plain(cfg.get("spark"))))
        return built.samples, built.uncovered, built.bad
    table = load_popularity(cfg.input)
    totals = weekly_totals(table)
    return build_samples(totals, rule, lags, history), uncovered_per_week(totals, rule, history), table.bad


def rolling_popularity(cfg: DictConfig) -> dict[str, Any]:
    """Run (or continue) the rolling-window study; returns the summary written to summary.json."""
    from tqdm import tqdm

    out = Path(cfg.out)
    if not cfg.resume and (out / STATE).exists():
        (out / STATE).unlink()
    check_resumable(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.yaml", cfg)
    rule = LabelRule(cfg.label.metric, cfg.label.threshold)
    samples, uncovered, bad = popularity_samples(cfg, rule, out)
    train_weeks = int(round(cfg.train_months * cfg.weeks_per_month))
    targets = window_weeks(samples.weeks, train_weeks, cfg.step_weeks, cfg.max_windows)
    for name, model_cfg in {"dnn.net": cfg.dnn.net, **(cfg.baselines or {})}.items():
        instantiate_logged(model_cfg, name, **({"in_features": 2, "out_features": 1} if name == "dnn.net" else {}))
    done = finished_windows(out)
    log.info("%d windows of %d weeks (%s), %d already done", len(targets), train_weeks, rule.describe(),
             sum(w in done for w in targets))
    with open(out / STATE, "a") as state, threadpool_limits(limits=cfg.threads):
        for week in tqdm(targets, desc="windows", unit="week", disable=not cfg.progress):
            if week not in done:
                done[week] = run_window(cfg, samples, week, train_weeks, uncovered.get(week, {}))
                state.write(json.dumps(done[week]) + "\n")
                state.flush()
    windows = [done[w] for w in targets]
    summary = write_outputs(out, windows, bad)
    print_table(summary, windows)
    print(f"outputs in {out}: metrics.csv, summary.json, windows.png, predictions.csv")
    return summary
