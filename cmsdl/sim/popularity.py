"""Synthetic CMS dataset-popularity records (cmsdl-popularity/1, see cmsdl.features.popularity.records).

Each dataset gets a tier (the seed's Table 1 mix), a heavy-tailed peak popularity, a creation week, a decay
time after which interest fades, sometimes a later revival, and one to three hosting sites. Weekly reads are
gamma-Poisson around that curve and are split over the hosting sites; users and CPU hours follow reads,
files follow size. New datasets therefore spike and decay, old ones stay quiet. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.cms import CACHE_STUDY_SITES
from cmsdl.errors import ConfigError
from cmsdl.features.popularity.records import LabelRule, PopularityTable, weekly_totals, write_popularity

# Table 1 of the seed (dataset counts per tier, no cut): AOD, AODSIM, MINIAOD, MINIAODSIM, USER.
TIER_COUNTS: dict[str, int] = {"AOD": 4924, "AODSIM": 21090, "MINIAOD": 7, "MINIAODSIM": 1083, "USER": 34127}
# median peak reads per week and median size (GB) of a dataset of each tier
TIER_PEAK: dict[str, float] = {"AOD": 6.0, "AODSIM": 4.0, "MINIAOD": 10.0, "MINIAODSIM": 8.0, "USER": 1.5}
TIER_SIZE_GB: dict[str, float] = {"AOD": 3000.0, "AODSIM": 1500.0, "MINIAOD": 400.0, "MINIAODSIM": 250.0, "USER": 60.0}
SITE_WEIGHTS: tuple[float, ...] = (1.0, 0.8, 3.0, 2.0, 1.0, 1.2)
PRIMARIES = ("SingleMuon", "DoubleEG", "JetHT", "MET", "ZeroBias", "TTJets_TuneCP5", "DYJetsToLL_M-50",
             "WJetsToLNu", "QCD_Pt-15to7000", "GluGluHToZZTo4L", "BsToJpsiPhi", "HSCPgluino")


def simulate_popularity(
    n_datasets: int = 4000,
    n_weeks: int = 60,
    seed: int = 1,
    sites: Sequence[str] = CACHE_STUDY_SITES,
    site_weights: Sequence[float] = SITE_WEIGHTS,
    prehistory_weeks: int = 26,
    revival_probability: float = 0.15,
) -> dict[str, np.ndarray]:
    """Columns of synthetic popularity records (as PopularityTable.columns), rows ordered by week."""
    if n_datasets < 1 or n_weeks < 2:
        raise ConfigError(f"expected n_datasets >= 1 and n_weeks >= 2, got {n_datasets} and {n_weeks}")
    if len(sites) != len(site_weights) or not sites:
        raise ConfigError(f"sites and site_weights: expected lists of equal, non-zero length, got {len(sites)} "
                          f"and {len(site_weights)}")
    rng = np.random.default_rng(seed)
    tiers = _tiers(rng, n_datasets)
    creation = rng.integers(-prehistory_weeks, n_weeks, n_datasets)
    rate = _rates(rng, tiers, creation, n_weeks, revival_probability)
    reads = rng.poisson(rng.gamma(2.0, rate / 2.0))
    size = np.array([TIER_SIZE_GB[t] for t in tiers]) * rng.lognormal(0.0, 0.9, n_datasets)
    nfiles = np.maximum(1, np.round(size / rng.lognormal(np.log(2.5), 0.25, n_datasets))).astype(np.int64)
    per_site = _split_over_sites(rng, reads, np.asarray(site_weights, dtype=float))
    community = rng.uniform(0.3, 1.2, n_datasets)
    names = np.array([_name(rng, i, t) for i, t in enumerate(tiers)], dtype=object)
    return _records(rng, per_site, names, tiers, creation, size, nfiles, community, list(sites))


def _tiers(rng: np.random.Generator, n: int) -> np.ndarray:
    weights = np.array(list(TIER_COUNTS.values()), dtype=float)
    return np.array(list(TIER_COUNTS), dtype=object)[rng.choice(len(weights), n, p=weights / weights.sum())]


def _rates(rng: np.random.Generator, tiers: np.ndarray, creation: np.ndarray, n_weeks: int, p_revival: float) -> np.ndarray:
    """Expected reads per (dataset, week): heavy-tailed peak at creation, exponential decay, a floor, revivals."""
    n = len(tiers)
    peak = np.array([TIER_PEAK[t] for t in tiers]) * rng.lognormal(0.0, 1.4, n)
    tau = rng.lognormal(np.log(5.0), 0.7, n)
    floor = peak * rng.uniform(0.0, 0.08, n) * (rng.random(n) < 0.5)
    age = np.arange(n_weeks)[None, :] - creation[:, None]
    alive = age >= 0
    rate = np.where(alive, peak[:, None] * np.exp(-np.maximum(age, 0) / tau[:, None]) + floor[:, None], 0.0)
    revive = rng.random(n) < p_revival
    start = creation + rng.integers(4, 40, n)
    bump_age = np.arange(n_weeks)[None, :] - start[:, None]
    bump = np.where(bump_age >= 0, np.exp(-np.maximum(bump_age, 0) / (tau[:, None] * 0.7)), 0.0)
    rate += revive[:, None] * peak[:, None] * rng.uniform(0.3, 1.0, n)[:, None] * bump
    return rate


def _split_over_sites(rng: np.random.Generator, reads: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reads per (dataset, week, site): each dataset lives at 1-3 sites, each with its own share."""
    n_ds, n_weeks = reads.shape
    n_sites = len(weights)
    hosts = np.zeros((n_ds, n_sites))
    n_hosts = rng.integers(1, min(3, n_sites) + 1, n_ds)
    for d in range(n_ds):
        chosen = rng.choice(n_sites, n_hosts[d], replace=False, p=weights / weights.sum())
        hosts[d, chosen] = rng.dirichlet(np.ones(n_hosts[d]) * 2.0)
    out = np.zeros((n_ds, n_weeks, n_sites), dtype=np.int64)
    left = reads.copy()
    share_left = np.ones(n_ds)
    for s in range(n_sites):
        p = np.clip(hosts[:, s] / np.maximum(share_left, 1e-12), 0.0, 1.0)
        out[:, :, s] = rng.binomial(left, p[:, None])
        left -= out[:, :, s]
        share_left -= hosts[:, s]
    return out


def _name(rng: np.random.Generator, index: int, tier: str) -> str:
    primary = PRIMARIES[rng.integers(len(PRIMARIES))]
    era = f"Run20{rng.integers(15, 19)}{'ABCDEFGH'[rng.integers(8)]}"
    processed = f"user-{era}_skim{index:05d}-v1" if tier == "USER" else f"{era}-17Jul2018_{index:05d}-v1"
    return f"/{primary}/{processed}/{tier}"


def _records(rng: np.random.Generator, per_site: np.ndarray, names: np.ndarray, tiers: np.ndarray,
             creation: np.ndarray, size: np.ndarray, nfiles: np.ndarray, community: np.ndarray,
             sites: list[str]) -> dict[str, np.ndarray]:
    ds, week, site = np.nonzero(per_site)
    order = np.lexsort((site, ds, week))
    ds, week, site = ds[order], week[order], site[order]
    naccess = per_site[ds, week, site]
    nusers = np.minimum(naccess, 1 + rng.poisson(community[ds] * naccess ** 0.7))
    cpu = naccess * (size[ds] / nfiles[ds]) * rng.lognormal(0.0, 0.5, len(ds))
    return {
        "dataset": names[ds], "tier": tiers[ds], "week": week.astype(np.int64),
        "site": np.array(sites, dtype=object)[site], "naccess": naccess.astype(np.int64),
        "nusers": nusers.astype(np.int64), "cpu_hours": cpu, "size_gb": size[ds], "nfiles": nfiles[ds],
        "creation_week": creation[ds].astype(np.int64),
    }


# the seed's Table 1 (ISGC 2018): datasets of 2013 - mid 2015 per tier; ALL holds tiers not listed as well
SEED_TABLE_ALL = {"no cut": 67892, "naccess > 10": 59222, "log(nusers) > 2": 3683}
TABLE_DEFINITIONS = (
    "counts are datasets (distinct names in the records of the whole period), as in the seed: 67892 is a count "
    "of datasets over 2.5 years, not of weekly records",
    "no cut: every dataset with at least one record",
    "naccess > 10: the dataset's reads summed over all sites and weeks of the period exceed 10",
    "log(nusers) > 2: ln(users) > 2, i.e. 8 users or more; the records hold users per site and week, so users is "
    "the largest weekly total (a lower bound of the distinct users over the period)",
    "(x%) is the tier's share of its column's ALL, as in the seed (AOD 4924/67892 = 7.25%, 4687/59222 = 8%, "
    "1285/3683 = 35%), not the share of the tier that passes",
    "pass rate: a column's ALL over the no-cut ALL (seed: 59222/67892 = 87.2% and 3683/67892 = 5.4%)",
)


def dataset_totals(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per dataset over the whole period: tier, reads summed, largest weekly users, CPU hours summed."""
    totals = weekly_totals(PopularityTable(columns))
    return totals.tiers, totals.naccess.sum(axis=1), totals.nusers.max(axis=1), totals.cpu_hours.sum(axis=1)


def tier_table(columns: dict[str, np.ndarray], rules: Sequence[LabelRule]) -> list[dict[str, Any]]:
    """The seed's Table 1: datasets per tier passing each cut on the period totals (TABLE_DEFINITIONS)."""
    tiers, naccess, nusers, cpu_hours = dataset_totals(columns)
    passes = {"no cut": np.ones(len(tiers), bool),
              **{rule.describe(): rule.apply(naccess, nusers, cpu_hours) for rule in rules}}
    rows = []
    for tier in [*sorted(set(tiers)), "ALL"]:
        mask = np.ones(len(tiers), bool) if tier == "ALL" else tiers == tier
        rows.append({"tier": tier, **{cut: int((flags & mask).sum()) for cut, flags in passes.items()}})
    return rows


def format_tier_table(rows: list[dict[str, Any]]) -> list[str]:
    """The table as the seed prints it, count (share of the column's ALL), then pass rates beside the seed's."""
    cuts = [key for key in rows[0] if key != "tier"]
    total = rows[-1]
    lines = ["Table 1. Effects of applied cuts on the different data tiers (seed's definitions).",
             " | ".join(["data tier / cut", *cuts])]
    for row in rows:
        cells = [f"{row[c]}" if row is total else f"{row[c]} ({100 * row[c] / max(total[c], 1):.2f}%)" for c in cuts]
        lines.append(" | ".join([row["tier"], *cells]))
    rates = [f"{cut} {100 * total[cut] / max(total['no cut'], 1):.1f}%"
             + (f" (seed {100 * SEED_TABLE_ALL[cut] / SEED_TABLE_ALL['no cut']:.1f}%)" if cut in SEED_TABLE_ALL else "")
             for cut in cuts[1:]]
    lines.append("pass rate: " + ", ".join(rates))
    lines += [f"- {text}" for text in TABLE_DEFINITIONS]
    return lines


def write_simulated_popularity(cfg: Any) -> Path:
    """Simulate records as cfg says, write cfg.out and the config beside it, print the tier table."""
    from cmsdl.io import write_config

    columns = simulate_popularity(cfg.n_datasets, cfg.n_weeks, cfg.seed, list(cfg.sites), list(cfg.site_weights),
                                  cfg.prehistory_weeks, cfg.revival_probability)
    out = write_popularity(cfg.out, columns)
    write_config(out.with_name(out.stem + ".config.yaml"), cfg)
    rules = [LabelRule("naccess", 10.0), LabelRule("log_nusers", 2.0)]
    print(f"wrote {len(columns['week'])} records of {len(set(columns['dataset']))} datasets, {cfg.n_weeks} weeks, "
          f"{len(cfg.sites)} sites to {out}")
    print("\n".join(format_tier_table(tier_table(columns, rules))))
    return out
