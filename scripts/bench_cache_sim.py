"""Benchmark: accesses per second of each CacheSimulator policy on a Zipf-like trace of 10^6 dataset reads.

    .venv/bin/python scripts/bench_cache_sim.py [--accesses 1000000] [--datasets 50000] [--cache 0.05]

Next-use times (OPT) and the per-week protection flags are computed once, as cmsdl cache-sim does; the setup
time is printed separately. PPC protects what was popular the week before (causal), PPC100 what is popular
this week (the oracle); the first 30% of the weeks warm the caches up (SDC ranks on them) and are not scored.
Each policy is one pass over the whole trace.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench_all import bench_line
from cmsdl.tools.cache import POLICIES, CacheSimulator, static_set
from cmsdl.tools.cache_sim import causal_protection, oracle_protection, persistence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--accesses", type=int, default=1_000_000)
    parser.add_argument("--datasets", type=int, default=50_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--cache", type=float, default=0.05, help="cache size as a fraction of the distinct datasets")
    args = parser.parse_args()
    if args.small:
        args.accesses, args.datasets = 100_000, 5_000
    rng = np.random.default_rng(0)
    items = (rng.zipf(1.15, args.accesses) - 1) % args.datasets
    weeks = np.sort(rng.integers(0, args.weeks, args.accesses))
    start = time.perf_counter()
    sim = CacheSimulator(items, weeks)
    setup = time.perf_counter() - start
    counts = np.zeros((args.datasets, args.weeks))
    np.add.at(counts, (items, weeks), 1)
    popular = counts > np.quantile(counts[counts > 0], 0.9)
    guards = {"ppc": causal_protection(persistence(popular, 1), 1), "ppc100": oracle_protection(popular, 1)}
    capacity = max(1, round(args.cache * sim.compulsory_misses))
    scored_from = sim.first_request_of_week(round(0.3 * args.weeks))
    static = static_set(sim.items[:scored_from])
    print(f"trace: {sim.requests:,} accesses, {sim.compulsory_misses:,} datasets, cache {capacity:,} datasets; "
          f"next-use setup {setup:.2f} s; scored from access {scored_from:,}, max hit rate there "
          f"{sim.max_hits_from(scored_from) / (sim.requests - scored_from):.3f}")
    print("policy | seconds | accesses/s | hit rate | vs LRU time")
    base = None
    rates = {}
    for policy in POLICIES:
        start = time.perf_counter()
        result = sim.run(policy, capacity, protected=guards.get(policy), static=static, score_from=scored_from)
        seconds = time.perf_counter() - start
        base = base or seconds
        print(f"{policy.upper():6} | {seconds:7.2f} | {sim.requests / seconds:12,.0f} | {result.hit_rate:.3f} | "
              f"{seconds / base:.2f}x")
        rates[policy] = sim.requests / seconds
    print(bench_line("cache simulator: OPT (Belady) vs LRU accesses/s", rates["opt"], rates["lru"], "", "accesses/s"))


if __name__ == "__main__":
    main()
