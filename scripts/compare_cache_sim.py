"""Side by side: hit rates per policy and cache size of two `cmsdl cache-sim` outputs (e.g. before / after a fix).

    .venv/bin/python scripts/compare_cache_sim.py OLD_OUT NEW_OUT [--site T1_US_FNAL]

Prints one markdown table: cache fraction x policy, each cell 'old → new', for one site or the mean over the
sites both outputs hold.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def hit_rates(out: Path, site: str | None) -> dict[tuple[float, str], float]:
    """(capacity fraction, policy) → hit rate of `site`, or the mean over sites."""
    with open(out / "hit_rates.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if site is None or r["site"] == site]
    groups: dict[tuple[float, str], list[float]] = defaultdict(list)
    for r in rows:
        groups[float(r["capacity_fraction"]), r["policy"]].append(float(r["hit_rate"]))
    return {key: sum(v) / len(v) for key, v in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--site", default=None, help="one site; default: the mean over all sites")
    args = parser.parse_args()
    old, new = hit_rates(args.old, args.site), hit_rates(args.new, args.site)
    policies = list(dict.fromkeys(p for _, p in new))
    fractions = sorted({f for f, _ in new})
    print(f"{args.site or 'mean over sites'} | " + " | ".join(p.upper() for p in policies))
    print("|".join(["---"] + ["---:"] * len(policies)))
    for f in fractions:
        cells = [f"{old[f, p]:.3f} → {new[f, p]:.3f}" if (f, p) in old else f"– → {new[f, p]:.3f}"
                 for p in policies]
        print(f"{f:g} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
