"""CacheSimulator policies on hand-checked traces, and `cmsdl cache-sim` on synthetic popularity records."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.data.popularity import write_popularity
from cmsdl.data.popularity_sim import simulate_popularity
from cmsdl.errors import ConfigError
from cmsdl.tools.cache import CacheSimulator, next_use
from tests.conftest import run_cmsdl

BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]    # the textbook trace


def brute_force_best(items: list[int], capacity: int) -> int:
    """Most hits any policy (with bypass) can get: search over every eviction choice."""
    best = {frozenset(): 0}
    for x in items:
        nxt: dict[frozenset, int] = {}
        for cache, hits in best.items():
            if x in cache:
                options = [(cache, hits + 1)]
            elif len(cache) < capacity:
                options = [(cache | {x}, hits)]
            else:
                options = [(cache, hits)] + [((cache - {y}) | {x}, hits) for y in cache]
            for c, h in options:
                nxt[c] = max(nxt.get(c, -1), h)
        best = nxt
    return max(best.values())


def test_next_use_positions() -> None:
    items = np.array([5, 1, 5, 2, 1, 5])
    assert next_use(items).tolist() == [2, 4, 5, 6 + 2, 6 + 1, 6 + 5]


def test_textbook_trace() -> None:
    sim = CacheSimulator(np.array(BELADY))
    assert sim.run("lru", 3).hits == 2
    assert sim.run("opt", 3).hits == 5
    assert sim.compulsory_misses == 5 and sim.max_hit_rate == pytest.approx(7 / 12)


@pytest.mark.parametrize("seed", range(6))
def test_opt_matches_exhaustive_search_and_bounds_every_policy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = rng.zipf(1.5, 40) % 7
    weeks = np.arange(40) // 8
    sim = CacheSimulator(items, weeks)
    protected = rng.random((7, 5)) < 0.4
    for capacity in (1, 2, 3):
        opt = sim.run("opt", capacity).hits
        assert opt == brute_force_best(items.tolist(), capacity)
        for policy in ("lru", "ppc", "sdc"):
            result = sim.run(policy, capacity, protected=protected, static=[0, 1])
            assert result.hits <= opt <= sim.requests - sim.compulsory_misses


def test_sized_caches_and_bad_arguments() -> None:
    items = np.array([0, 1, 0, 2, 0, 1])
    sizes = np.array([1.0, 2.0, 5.0])
    sim = CacheSimulator(items, sizes=sizes)
    assert sim.footprint() == 8.0 and not sim.unit
    assert sim.run("lru", 3.0).hits == 3            # item 2 never fits; 0 and 1 stay
    assert sim.run("opt", 3.0).hits == 3
    assert CacheSimulator(items, sizes=np.ones(3)).run("lru", 2).hits == CacheSimulator(items).run("lru", 2).hits
    with pytest.raises(ConfigError, match="policy"):
        sim.run("fifo", 2)
    with pytest.raises(ConfigError, match="protected"):
        sim.run("ppc", 2)


def test_ppc_keeps_protected_datasets() -> None:
    items = np.array([0, 1, 2, 0, 3, 4, 0])          # 0 is protected and must survive the scan of 1..4
    protected = np.zeros((5, 1), bool)
    protected[0] = True
    sim = CacheSimulator(items)
    assert sim.run("ppc", 2, protected=protected).hits == 2
    assert sim.run("lru", 2).hits == 0


@pytest.fixture(scope="module")
def popularity_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "popularity.csv"
    write_popularity(path, simulate_popularity(n_datasets=800, n_weeks=30, seed=2))
    return path


def test_cache_sim_command_writes_table_and_curves(popularity_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    proc = run_cmsdl("cache-sim", f"input={popularity_file}", f"out={out}", "progress=false",
                     "sites=[T1_US_FNAL,T2_DE_DESY]", cwd=tmp_path)
    with open(out / "site_table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["site"] for r in table] == ["T1_US_FNAL", "T2_DE_DESY"]
    for row in table:
        assert int(row["compulsory misses"]) == int(row["distinct DS"]) <= int(row["#DS (requests)"])
        assert float(row["max hit rate"]) == pytest.approx(
            1 - int(row["compulsory misses"]) / int(row["#DS (requests)"]), abs=1e-4)
        assert int(row["#popular DS"]) <= int(row["distinct DS"])
    with open(out / "hit_rates.csv") as handle:
        rates = list(csv.DictReader(handle))
    assert {r["policy"] for r in rates} == {"lru", "opt", "ppc", "ppc100", "sdc"} and len(rates) == 2 * 5 * 6
    summary = json.loads((out / "summary.json").read_text())
    assert all(c["below_max"] == c["results"] for c in summary["checks"].values())
    assert (out / "hit_rates.png").stat().st_size > 5000 and "max hit rate" in proc.stdout


def test_cache_sim_rejects_unknown_site(popularity_file: Path, tmp_path: Path) -> None:
    proc = run_cmsdl("cache-sim", f"input={popularity_file}", f"out={tmp_path}", "sites=[T9_XX_Nowhere]",
                     cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "T9_XX_Nowhere" in proc.stderr and not list(tmp_path.glob("*.csv"))


@pytest.mark.slow
def test_policy_order_with_popularity_predictions(tmp_path: Path) -> None:
    """The issue's bar: OPT >= PPC100 >= PPC >= LRU with the rolling DNN's predictions, all under the max."""
    data = tmp_path / "popularity.csv"
    write_popularity(data, simulate_popularity(n_datasets=2500, n_weeks=44, seed=7))
    run_cmsdl("popularity", f"input={data}", f"out={tmp_path / 'pop'}", "progress=false", "baselines={}",
              cwd=tmp_path, timeout=600)
    run_cmsdl("cache-sim", f"input={data}", f"out={tmp_path / 'cache'}", "progress=false",
              f"predictions={tmp_path / 'pop' / 'predictions.csv'}", cwd=tmp_path)
    with open(tmp_path / "cache" / "hit_rates.csv") as handle:
        rates = list(csv.DictReader(handle))
    for (site, size), group in itertools.groupby(rates, key=lambda r: (r["site"], r["capacity"])):
        hits = {r["policy"]: int(r["hits"]) for r in group}
        assert hits["opt"] >= hits["ppc100"] >= hits["ppc"] >= hits["lru"], (site, size, hits)
