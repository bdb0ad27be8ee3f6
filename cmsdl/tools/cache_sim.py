"""`cmsdl cache-sim`: per-site cache simulation on popularity records, with hit-rate curves and the seed's table.

Each site's trace is its requests in week order: one per (dataset, week) read there (``granularity: week``,
the seed's reading, where '#DS' counts these requests) or one per read (``granularity: access``); the order
inside a week is shuffled with a fixed seed. PPC protects datasets predicted popular in any of the next
``horizon_weeks`` weeks: a model's predictions from ``cmsdl popularity`` (weeks without predictions get
no protection) or, without a predictions file, 'popular last week'; PPC100 uses the true labels. Outputs in ``out``: site_table.csv, hit_rates.csv, hit_rates.png, summary.json, config.yaml.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from cmsdl.config import hydra_app
from cmsdl.data.popularity import LabelRule, PopularityTable, WeeklyTotals, load_popularity, weekly_totals
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.io import atomic_write, write_config, write_json
from cmsdl.tools.cache import POLICIES, CacheSimulator, static_set

log = logging.getLogger(__name__)
SITE_COLUMNS = ("site", "#DS (requests)", "distinct DS", "#popular DS", "% popular DS", "reads", "max weeks/DS",
                "compulsory misses", "max hit rate")


def site_trace(table: PopularityTable, totals: WeeklyTotals, site: str, granularity: str,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dataset ids (rows of `totals`) and weeks of one site's requests, in time order."""
    rows = np.flatnonzero(table["site"] == site)
    ids = np.searchsorted(totals.names, table["dataset"][rows])
    weeks = table["week"][rows]
    if granularity == "access":
        counts = table["naccess"][rows]
        ids, weeks = np.repeat(ids, counts), np.repeat(weeks, counts)
    elif granularity != "week":
        raise ConfigError(f"granularity: got {granularity!r}, expected week or access")
    order = np.lexsort((rng.random(len(ids)), weeks))
    return ids[order], weeks[order]


def protection(flags: np.ndarray, horizon: int) -> np.ndarray:
    """Protected during week w iff flagged in any of weeks w .. w + horizon - 1."""
    out = flags.copy()
    for k in range(1, horizon):
        out[:, :-k] |= flags[:, k:]
    return out


def predicted_flags(path: str | None, totals: WeeklyTotals, popular: np.ndarray, model: str,
                    threshold: float) -> tuple[np.ndarray, str]:
    """Predicted-popular flags (datasets x weeks) from a `cmsdl popularity` predictions.csv, else persistence."""
    persistence = np.zeros_like(popular)
    persistence[:, 1:] = popular[:, :-1]
    if not path:
        return persistence, "persistence (popular last week)"
    flags, known = np.zeros_like(popular), np.zeros(popular.shape[1], bool)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        column = f"p_{model}"
        if column not in (reader.fieldnames or []):
            raise InputFormatError(f"{path}: no column {column!r}; columns are {reader.fieldnames}")
        rows = [(r["dataset"], int(r["week"]), float(r[column])) for r in reader]
    names = np.array([r[0] for r in rows], dtype=object)
    ids = np.searchsorted(totals.names, names)
    found = (ids < len(totals.names)) & (totals.names[np.minimum(ids, len(totals.names) - 1)] == names)
    weeks = np.array([r[1] for r in rows]) - totals.first_week
    probs = np.array([r[2] for r in rows])
    inside = found & (weeks >= 0) & (weeks < popular.shape[1])
    known[np.unique(weeks[inside])] = True
    flags[ids[inside], weeks[inside]] = probs[inside] >= threshold
    return flags, f"{model} predictions from {path} ({known.sum()} weeks; no protection in the others)"


def site_row(site: str, sim: CacheSimulator, table: PopularityTable, popular: np.ndarray) -> dict[str, Any]:
    """The seed's per-site columns."""
    ids = np.unique(sim.items)
    per_ds = np.bincount(sim.items) if sim.requests else np.zeros(0)
    n_popular = int(popular[ids].any(axis=1).sum())
    return dict(zip(SITE_COLUMNS, (
        site, sim.requests, len(ids), n_popular, round(100.0 * n_popular / max(len(ids), 1), 2),
        int(table["naccess"][table["site"] == site].sum()),
        int(per_ds.max()) if len(per_ds) else 0, sim.compulsory_misses, round(sim.max_hit_rate, 4),
    )))


def simulate_site(cfg: DictConfig, sim: CacheSimulator, guards: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Hit rates of every policy over the capacity sweep of one site."""
    footprint = sim.footprint()
    static = static_set(sim.items, sim.sizes, cfg.sdc.train_fraction)
    results = []
    for fraction in cfg.capacity_fractions:
        capacity = fraction * footprint
        if sim.unit:
            capacity = max(1.0, float(round(capacity)))
        for policy in cfg.policies:
            result = sim.run(policy, capacity, protected=guards.get(policy), static=static,
                             static_fraction=cfg.sdc.static_fraction)
            results.append({"policy": policy, "capacity_fraction": fraction, "capacity": capacity,
                            "hits": result.hits, "requests": result.requests, "hit_rate": round(result.hit_rate, 5)})
    return results


def plot_curves(path: Path, curves: dict[str, list[dict[str, Any]]], max_rates: dict[str, float], unit: str) -> None:
    """One panel per site: hit rate against cache size, one line per policy, the max hit rate dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    for ax, (site, results) in zip(axes.flat, curves.items()):
        for policy in dict.fromkeys(r["policy"] for r in results):
            mine = [r for r in results if r["policy"] == policy]
            ax.plot([r["capacity"] for r in mine], [r["hit_rate"] for r in mine], marker="o", label=policy.upper())
        ax.axhline(max_rates[site], ls="--", c="grey", lw=1, label="max hit rate")
        ax.set(title=site, xlabel=f"cache size ({unit})", ylabel="hit rate", xscale="log")
        ax.grid(alpha=0.3)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def ordering_checks(results: list[dict[str, Any]], compulsory: int) -> dict[str, int]:
    """How many cache sizes satisfy OPT >= PPC100 >= PPC >= LRU and hit rate <= max hit rate."""
    by_size: dict[float, dict[str, float]] = {}
    for r in results:
        by_size.setdefault(r["capacity"], {})[r["policy"]] = r["hits"]
    chain = [p for p in ("opt", "ppc100", "ppc", "lru") if all(p in v for v in by_size.values())]
    ordered = sum(all(v[a] >= v[b] for a, b in zip(chain, chain[1:])) for v in by_size.values())
    below = sum(r["hits"] <= r["requests"] - compulsory for r in results)
    return {"sizes": len(by_size), "ordered_sizes": int(ordered), "results": len(results), "below_max": int(below)}


def cache_sim(cfg: DictConfig) -> dict[str, Any]:
    """Simulate every site and write the table, curves and summary; returns the summary."""
    from tqdm import tqdm

    unknown = [p for p in cfg.policies if p not in POLICIES]
    if unknown:
        raise ConfigError(f"policies: unknown {unknown}, expected some of {', '.join(POLICIES)}")
    if cfg.size_unit not in ("datasets", "tb"):
        raise ConfigError(f"size_unit: got {cfg.size_unit!r}, expected datasets or tb")
    out = Path(cfg.out)
    table = load_popularity(cfg.input)
    totals = weekly_totals(table)
    popular = totals.popular(LabelRule(cfg.label.metric, cfg.label.threshold))
    flags, source = predicted_flags(cfg.predictions, totals, popular, cfg.prediction_model, cfg.decision_threshold)
    guards = {"ppc": protection(flags, cfg.horizon_weeks), "ppc100": protection(popular, cfg.horizon_weeks)}
    sizes = None if cfg.size_unit == "datasets" else totals.size_gb / 1000.0
    sites = list(cfg.sites) if cfg.sites else sorted(set(table["site"]))
    missing = [s for s in sites if s not in set(table["site"])]
    if missing:
        raise ConfigError(f"sites: {missing} not in {cfg.input}")
    rng = np.random.default_rng(cfg.seed)
    site_rows, curves, checks, all_results = [], {}, {}, []
    for site in tqdm(sites, desc="sites", disable=not cfg.progress):
        items, weeks = site_trace(table, totals, site, cfg.granularity, rng)
        sim = CacheSimulator(items, weeks - totals.first_week, sizes)
        site_rows.append(site_row(site, sim, table, popular))
        curves[site] = simulate_site(cfg, sim, guards)
        checks[site] = ordering_checks(curves[site], sim.compulsory_misses)
        all_results += [{"site": site, **r} for r in curves[site]]
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.yaml", cfg)
    write_csv(out / "site_table.csv", site_rows)
    write_csv(out / "hit_rates.csv", all_results)
    plot_curves(out / "hit_rates.png", curves, {r["site"]: r["max hit rate"] for r in site_rows},
                "datasets" if cfg.size_unit == "datasets" else "TB")
    summary = {"ppc_protection": source, "granularity": cfg.granularity, "size_unit": cfg.size_unit,
               "sites": site_rows, "checks": checks, "bad_records": len(table.bad)}
    write_json(out / "summary.json", summary)
    print_report(site_rows, curves, checks, source)
    print(f"outputs in {out}: site_table.csv, hit_rates.csv, hit_rates.png, summary.json")
    return summary


def print_report(site_rows: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]],
                 checks: dict[str, dict[str, int]], source: str) -> None:
    print(" | ".join(SITE_COLUMNS))
    for row in site_rows:
        print(" | ".join(str(v) for v in row.values()))
    print(f"PPC protection: {source}")
    for site, results in curves.items():
        policies = list(dict.fromkeys(r["policy"] for r in results))
        print(f"{site}: cache fraction | " + " | ".join(p.upper() for p in policies))
        for fraction in dict.fromkeys(r["capacity_fraction"] for r in results):
            rates = {r["policy"]: r["hit_rate"] for r in results if r["capacity_fraction"] == fraction}
            print(f"  {fraction:g} | " + " | ".join(f"{rates[p]:.3f}" for p in policies))
        c = checks[site]
        print(f"  OPT >= PPC100 >= PPC >= LRU at {c['ordered_sizes']}/{c['sizes']} sizes; "
              f"{c['below_max']}/{c['results']} hit rates <= max hit rate")


@hydra_app("cache_sim")
def main(cfg: DictConfig) -> None:
    cache_sim(cfg)
