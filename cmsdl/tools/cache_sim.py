"""`cmsdl cache-sim`: per-site cache simulation on popularity records, with hit-rate curves and the seed's table.

Each site's trace is its requests in week order: one per (dataset, week) read there (``granularity: week``,
the seed's reading) or one per read (``granularity: access``); the order inside a week is a shuffle that
depends only on the seed, the site and that week. Replaying week w uses only what was known before week w
starts: PPC protects the datasets predicted popular in weeks w .. w + horizon_weeks - 1 by predictions made
from weeks before w (``cmsdl popularity``'s predictions.csv; a horizon of h weeks needs predictions h weeks
ahead) or, without a predictions file, those popular in week w - 1. PPC100, the oracle, uses the true labels
of those weeks. The first ``warmup_fraction`` of the weeks warms every cache up and is not scored; SDC ranks
its static set on it. Outputs in ``out``: site_table.csv, hit_rates.csv, hit_rates.png, summary.json, config.yaml.
"""

from __future__ import annotations

import csv
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.popularity.records import LabelRule, PopularityTable, WeeklyTotals, load_popularity, weekly_totals
from cmsdl.io import atomic_write, read_input_text, write_config, write_json
from cmsdl.tools.cache import POLICIES, CacheSimulator, static_set

log = logging.getLogger(__name__)
# The seed's per-site table (ISGC 2018, 'Caching strategies for sites'), column by column.
SITE_COLUMNS = {
    "site": "the site",
    "#DS": "requests: (dataset, week) pairs read at the site (records of the input)",
    "#popular DS": "those of the #DS requests whose dataset is popular that week (label rule on reads summed "
                   "over all sites, the label PPC100 uses)",
    "% popular DS": "100 x #popular DS / #DS",
    "#reads": "reads (naccess) at the site, summed",
    "max weeks/DS": "most weeks in which one dataset is read at the site",
    "compulsory misses": "distinct datasets read at the site (the first request of each misses in any cache)",
    "max hit rate": "1 - compulsory misses / #DS",
}


@dataclass
class Study:
    """What every site's simulation shares: the records, labels, PPC/PPC100 protections and the warm-up split."""

    table: PopularityTable
    totals: WeeklyTotals
    popular: np.ndarray
    guards: dict[str, np.ndarray]
    ppc_source: str
    sizes: np.ndarray | None
    warmup_weeks: int


def site_trace(table: PopularityTable, totals: WeeklyTotals, site: str, granularity: str,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset ids (rows of `totals`) and weeks of one site's requests, in time order."""
    rows = np.flatnonzero(table["site"] == site)
    ids = np.searchsorted(totals.names, table["dataset"][rows])
    weeks = table["week"][rows]
    if granularity == "access":
        counts = table["naccess"][rows]
        ids, weeks = np.repeat(ids, counts), np.repeat(weeks, counts)
    elif granularity != "week":
        raise ConfigError(f"granularity: got {granularity!r}, expected week or access")
    order = shuffled_within_weeks(weeks - totals.first_week, seed, site)
    return ids[order], weeks[order]


def shuffled_within_weeks(weeks: np.ndarray, seed: int, site: str) -> np.ndarray:
    """Order by week; inside a week a shuffle drawn from (seed, site, week) alone, so no week sees another."""
    order = np.argsort(weeks, kind="stable")
    values, starts, counts = np.unique(weeks[order], return_index=True, return_counts=True)
    site_key = zlib.crc32(site.encode())
    for week, start, count in zip(values.tolist(), starts.tolist(), counts.tolist()):
        shuffle = np.random.default_rng([seed, site_key, week]).permutation(count)
        order[start:start + count] = order[start:start + count][shuffle]
    return order


def oracle_protection(popular: np.ndarray, horizon: int) -> np.ndarray:
    """PPC100: protected during week w iff truly popular in any of weeks w .. w + horizon - 1 (looks ahead)."""
    out = popular.copy()
    for k in range(1, horizon):
        out[:, :-k] |= popular[:, k:]
    return out


def causal_protection(ahead: dict[int, np.ndarray], horizon: int) -> np.ndarray:
    """PPC: protected during week w iff predicted popular in week w + k by a prediction made k + 1 weeks
    ahead (from weeks before w), for some k < horizon. ahead[h][:, t]: predicted for week t from weeks <= t - h."""
    out = ahead[1].copy()
    for k in range(1, horizon):
        out[:, :-k] |= ahead[k + 1][:, k:]
    return out


def persistence(popular: np.ndarray, horizon: int) -> dict[int, np.ndarray]:
    """'Popular in the last week known' as a predictor h weeks ahead, for h = 1 .. horizon."""
    ahead = {}
    for h in range(1, horizon + 1):
        flags = np.zeros_like(popular)
        flags[:, h:] = popular[:, :-h]
        ahead[h] = flags
    return ahead


def predicted_flags(path: str, totals: WeeklyTotals, model: str, threshold: float,
                    horizon: int) -> tuple[dict[int, np.ndarray], str]:
    """Predicted-popular flags per prediction horizon (datasets x weeks) from a `cmsdl popularity` predictions.csv.

    The optional column ``horizon`` says how many weeks ahead each row was predicted (the prediction for
    ``week`` was made from weeks <= week - horizon); without it every row is a next-week prediction (1).
    """
    column = f"p_{model}"
    reader = csv.DictReader(io.StringIO(read_input_text(path, "predictions file")))
    fields = reader.fieldnames or []
    if column not in fields:
        raise InputFormatError(f"{path}: no column {column!r}; columns are {fields}")
    rows = []
    for line, r in enumerate(reader, start=2):
        try:
            rows.append((r["dataset"], int(r["week"]), float(r[column]), int(r.get("horizon") or 1)))
        except (TypeError, ValueError):
            raise InputFormatError(f"{path}: line {line}: expected an integer week and horizon and a number "
                                   f"{column}, got {dict(r)}") from None
    offered = sorted({r[3] for r in rows})
    usable = 0
    while usable + 1 in offered:
        usable += 1
    if usable < horizon:
        raise ConfigError(f"horizon_weeks={horizon}: {path} holds predictions made {offered} week(s) ahead (column "
                          f"'horizon'); a {horizon}-week horizon needs a model trained to predict 1..{horizon} weeks "
                          f"ahead (use horizon_weeks <= {usable})" if usable else
                          f"predictions: {path} holds no next-week predictions (horizon 1), found horizons {offered}")
    names = np.array([r[0] for r in rows], dtype=object)
    ids = np.searchsorted(totals.names, names)
    found = (ids < len(totals.names)) & (totals.names[np.minimum(ids, len(totals.names) - 1)] == names)
    weeks = np.array([r[1] for r in rows], dtype=np.int64) - totals.first_week
    probs = np.array([r[2] for r in rows])
    leads = np.array([r[3] for r in rows])
    inside = found & (weeks >= 0) & (weeks < totals.n_weeks)
    ahead = {}
    for h in range(1, horizon + 1):
        mine = inside & (leads == h)
        flags = np.zeros((len(totals.names), totals.n_weeks), bool)
        flags[ids[mine], weeks[mine]] = probs[mine] >= threshold
        ahead[h] = flags
    known = len(np.unique(weeks[inside & (leads == 1)]))
    return ahead, f"{model} predictions from {path} ({known} weeks; no protection in the others)"


def prepare_study(cfg: DictConfig) -> Study:
    """Load the records and derive the labels, the PPC/PPC100 protections and the warm-up split."""
    unknown = [p for p in cfg.policies if p not in POLICIES]
    if unknown:
        raise ConfigError(f"policies: unknown {unknown}, expected some of {', '.join(POLICIES)}")
    if cfg.size_unit not in ("datasets", "tb"):
        raise ConfigError(f"size_unit: got {cfg.size_unit!r}, expected datasets or tb")
    if cfg.horizon_weeks < 1:
        raise ConfigError(f"horizon_weeks: expected a number of weeks >= 1, got {cfg.horizon_weeks}")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError(f"warmup_fraction: expected a share of the weeks in [0, 1), got {cfg.warmup_fraction}")
    table = load_popularity(cfg.input)
    totals = weekly_totals(table)
    popular = totals.popular(LabelRule(cfg.label.metric, cfg.label.threshold))
    if cfg.predictions:
        ahead, source = predicted_flags(cfg.predictions, totals, cfg.prediction_model, cfg.decision_threshold,
                                        cfg.horizon_weeks)
    else:
        ahead, source = persistence(popular, cfg.horizon_weeks), "persistence (popular in the week before)"
    guards = {"ppc": causal_protection(ahead, cfg.horizon_weeks),
              "ppc100": oracle_protection(popular, cfg.horizon_weeks)}
    sizes = None if cfg.size_unit == "datasets" else totals.size_gb / 1000.0
    warmup = int(round(cfg.warmup_fraction * totals.n_weeks))
    return Study(table, totals, popular, guards, source, sizes, warmup)


def site_simulator(study: Study, site: str, cfg: DictConfig) -> CacheSimulator:
    """The trace of one site, weeks counted from the first week of the records."""
    items, weeks = site_trace(study.table, study.totals, site, cfg.granularity, cfg.seed)
    return CacheSimulator(items, weeks - study.totals.first_week, study.sizes)


def site_row(site: str, study: Study) -> dict[str, Any]:
    """The seed's per-site columns (SITE_COLUMNS), from the (dataset, week) pairs read at the site."""
    mine = study.table["site"] == site
    ids = np.searchsorted(study.totals.names, study.table["dataset"][mine])
    weeks = study.table["week"][mine] - study.totals.first_week
    pairs = np.unique(np.stack([ids, weeks]), axis=1)
    n_ds = pairs.shape[1]
    n_popular = int(study.popular[pairs[0], pairs[1]].sum())
    distinct = len(np.unique(pairs[0]))
    return dict(zip(SITE_COLUMNS, (
        site, n_ds, n_popular, round(100.0 * n_popular / max(n_ds, 1), 2),
        int(study.table["naccess"][mine].sum()), int(np.bincount(pairs[0]).max()) if n_ds else 0,
        distinct, round(1.0 - distinct / n_ds, 4) if n_ds else float("nan"),
    )))


def simulate_site(cfg: DictConfig, sim: CacheSimulator, study: Study) -> list[dict[str, Any]]:
    """Hit rates of every policy over the capacity sweep of one site, scored after the warm-up weeks."""
    footprint = sim.footprint()
    start = sim.first_request_of_week(study.warmup_weeks)
    static = static_set(sim.items[:start])
    results = []
    for fraction in cfg.capacity_fractions:
        capacity = fraction * footprint
        if sim.unit:
            capacity = max(1.0, float(round(capacity)))
        for policy in cfg.policies:
            result = sim.run(policy, capacity, protected=study.guards.get(policy), static=static,
                             static_fraction=cfg.sdc.static_fraction, score_from=start)
            results.append({"policy": policy, "capacity_fraction": fraction, "capacity": capacity,
                            "hits": result.hits, "requests": result.requests, "hit_rate": round(result.hit_rate, 5),
                            "scored_from_week": study.totals.first_week + study.warmup_weeks})
    return results


def plot_curves(path: Path, curves: dict[str, list[dict[str, Any]]], max_rates: dict[str, float], unit: str,
                scored_from: int) -> None:
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
    fig.suptitle(f"hit rates on requests from week {scored_from} on; earlier weeks warm the caches up "
                 "(SDC ranks its static set on them)", fontsize=10)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def ordering_checks(results: list[dict[str, Any]], max_hits: int) -> dict[str, int]:
    """How many cache sizes satisfy OPT >= PPC100 >= PPC >= LRU and hits <= the most any cache can score."""
    by_size: dict[float, dict[str, float]] = {}
    for r in results:
        by_size.setdefault(r["capacity"], {})[r["policy"]] = r["hits"]
    chain = [p for p in ("opt", "ppc100", "ppc", "lru") if all(p in v for v in by_size.values())]
    ordered = sum(all(v[a] >= v[b] for a, b in zip(chain, chain[1:])) for v in by_size.values())
    below = sum(r["hits"] <= max_hits for r in results)
    return {"sizes": len(by_size), "ordered_sizes": int(ordered), "results": len(results), "below_max": int(below)}


def chosen_sites(cfg: DictConfig, table_sites: set[str]) -> list[str]:
    """The sites to simulate: cfg.sites, each of them in the input, or every site of the input."""
    sites = list(cfg.sites) if cfg.sites else sorted(table_sites)
    missing = [s for s in sites if s not in table_sites]
    if missing:
        raise ConfigError(f"sites: {missing} not in {cfg.input}")
    return sites


def cache_sim(cfg: DictConfig) -> dict[str, Any]:
    """Simulate every site and write the table, curves and summary; returns the summary."""
    from tqdm import tqdm

    study = prepare_study(cfg)
    sites = chosen_sites(cfg, set(study.table["site"]))
    scored_from = study.totals.first_week + study.warmup_weeks
    site_rows, curves, checks, all_results, ceilings = [], {}, {}, [], {}
    for site in tqdm(sites, desc="sites", disable=not cfg.progress):
        sim = site_simulator(study, site, cfg)
        start = sim.first_request_of_week(study.warmup_weeks)
        site_rows.append(site_row(site, study))
        curves[site] = simulate_site(cfg, sim, study)
        max_hits = sim.max_hits_from(start)
        ceilings[site] = max_hits / (sim.requests - start) if sim.requests > start else float("nan")
        checks[site] = ordering_checks(curves[site], max_hits)
        all_results += [{"site": site, **r} for r in curves[site]]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.yaml", cfg)
    write_csv(out / "site_table.csv", site_rows)
    write_csv(out / "hit_rates.csv", all_results)
    plot_curves(out / "hit_rates.png", curves, ceilings, "datasets" if cfg.size_unit == "datasets" else "TB",
                scored_from)
    summary = {"ppc_protection": source_line(study, cfg), "granularity": cfg.granularity, "size_unit": cfg.size_unit,
               "scored_from_week": scored_from, "warmup_weeks": study.warmup_weeks,
               "site_columns": SITE_COLUMNS, "sites": site_rows, "max_hit_rate_scored": ceilings,
               "checks": checks, "bad_records": len(study.table.bad)}
    write_json(out / "summary.json", summary)
    print_report(site_rows, curves, checks, summary)
    print(f"outputs in {out}: site_table.csv, hit_rates.csv, hit_rates.png, summary.json")
    return summary


def source_line(study: Study, cfg: DictConfig) -> str:
    return (f"{study.ppc_source}, horizon {cfg.horizon_weeks} week(s), made before the replayed week; "
            f"PPC100: true labels of the same weeks (oracle)")


def print_report(site_rows: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]],
                 checks: dict[str, dict[str, int]], summary: dict[str, Any]) -> None:
    print(" | ".join(SITE_COLUMNS))
    for row in site_rows:
        print(" | ".join(str(v) for v in row.values()))
    for name, meaning in SITE_COLUMNS.items():
        print(f"  {name}: {meaning}")
    print(f"PPC protection: {summary['ppc_protection']}")
    print(f"hit rates: requests from week {summary['scored_from_week']} on; the {summary['warmup_weeks']} weeks "
          "before warm the caches up (SDC ranks its static set on them)")
    for site, results in curves.items():
        policies = list(dict.fromkeys(r["policy"] for r in results))
        print(f"{site}: cache fraction | " + " | ".join(p.upper() for p in policies))
        for fraction in dict.fromkeys(r["capacity_fraction"] for r in results):
            rates = {r["policy"]: r["hit_rate"] for r in results if r["capacity_fraction"] == fraction}
            print(f"  {fraction:g} | " + " | ".join(f"{rates[p]:.3f}" for p in policies))
        c = checks[site]
        print(f"  OPT >= PPC100 >= PPC >= LRU at {c['ordered_sizes']}/{c['sizes']} sizes; "
              f"{c['below_max']}/{c['results']} hit rates <= max hit rate")
