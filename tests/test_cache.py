"""CacheSimulator policies on hand-checked traces, and `cmsdl cache-sim` on synthetic popularity records."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cmsdl.config import compose_run_config
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.popularity.records import write_popularity
from cmsdl.sim.popularity import simulate_popularity
from cmsdl.tools.cache import CacheSimulator, next_use, static_set
from cmsdl.tools.cache_sim import prepare_study, site_simulator
from tests.conftest import run_cmsdl

BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]    # the textbook trace
SITE = "T1_US_FNAL"


def brute_force_best(items: list[int], capacity: float, sizes: list[float] | None = None) -> int:
    """Most hits any policy (with bypass) can get: search over every admission and eviction choice."""
    size = sizes or [1.0] * (max(items) + 1)
    best = {frozenset(): 0}
    for x in items:
        nxt: dict[frozenset, int] = {}
        for cache, hits in best.items():
            options = [(cache, hits + (x in cache))]
            if x not in cache and size[x] <= capacity:
                for k in range(len(cache) + 1):
                    for evicted in itertools.combinations(sorted(cache), k):
                        kept = cache - set(evicted)
                        if sum(size[y] for y in kept) + size[x] <= capacity:
                            options.append((kept | {x}, hits))
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


def test_sized_opt_admits_nothing_dead_and_evicts_furthest_next_use() -> None:
    """The issue's example: caching the never-again 8 TB item 2 cost a hit; the exact optimum is 4."""
    items, sizes = [3, 2, 0, 1, 0, 0, 3, 3], [2.0, 8.0, 5.0, 1.0]
    sim = CacheSimulator(np.array(items), sizes=np.array(sizes))
    assert sim.run("opt", 10.0).hits == 4 == brute_force_best(items, 10.0, sizes)


@pytest.mark.parametrize("seed", range(8))
def test_sized_opt_never_beats_the_exact_optimum(seed: int) -> None:
    """With sizes OPT is the furthest-next-use heuristic: never above the exhaustive optimum, often equal."""
    rng = np.random.default_rng(100 + seed)
    items = rng.integers(0, 5, 14)
    sizes = rng.integers(1, 5, 5).astype(float)
    sim = CacheSimulator(items, sizes=sizes)
    for capacity in (3.0, 5.0, 8.0):
        best = brute_force_best(items.tolist(), capacity, sizes.tolist())
        assert sim.run("lru", capacity).hits <= best
        assert sim.run("opt", capacity).hits <= best


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
        assert int(row["compulsory misses"]) <= int(row["#DS"])
        ceiling = 1 - int(row["compulsory misses"]) / int(row["#DS"])
        assert float(row["max hit rate"]) == pytest.approx(ceiling, abs=1e-4)
        assert float(row["% popular DS"]) == pytest.approx(100 * int(row["#popular DS"]) / int(row["#DS"]), abs=0.01)
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
    """With the rolling DNN's (causal) predictions: OPT bounds every policy, PPC beats LRU in small caches.

    PPC100 is not an upper bound of PPC: protecting every truly popular dataset can crowd a small cache.
    """
    data = tmp_path / "popularity.csv"
    write_popularity(data, simulate_popularity(n_datasets=2500, n_weeks=44, seed=7))
    run_cmsdl("popularity", f"input={data}", f"out={tmp_path / 'pop'}", "progress=false", "baselines=null",
              cwd=tmp_path, timeout=600)
    run_cmsdl("cache-sim", f"input={data}", f"out={tmp_path / 'cache'}", "progress=false",
              f"predictions={tmp_path / 'pop' / 'predictions.csv'}", cwd=tmp_path)
    with open(tmp_path / "cache" / "hit_rates.csv") as handle:
        rates = list(csv.DictReader(handle))
    for (site, fraction), group in itertools.groupby(rates, key=lambda r: (r["site"], r["capacity_fraction"])):
        hits = {r["policy"]: int(r["hits"]) for r in group}
        assert hits["opt"] == max(hits.values()), (site, fraction, hits)
        if float(fraction) <= 0.05:
            assert hits["ppc"] > hits["lru"], (site, fraction, hits)


def popularity_rows(rows: list[tuple[str, int, str, int]]) -> dict[str, np.ndarray]:
    """cmsdl-popularity/1 columns for hand-written (dataset, week, site, naccess) records."""
    n = len(rows)
    names = np.array([r[0] for r in rows], dtype=object)
    return {"dataset": names, "tier": np.array([d.rsplit("/", 1)[1] for d in names], dtype=object),
            "week": np.array([r[1] for r in rows]), "site": np.array([r[2] for r in rows], dtype=object),
            "naccess": np.array([r[3] for r in rows]), "nusers": np.ones(n, np.int64), "cpu_hours": np.ones(n),
            "size_gb": np.full(n, 1000.0), "nfiles": np.ones(n, np.int64), "creation_week": np.zeros(n, np.int64)}


@pytest.mark.parametrize("granularity", ["week", "access"])
def test_site_table_has_the_seeds_definitions(tmp_path: Path, granularity: str) -> None:
    """#popular DS counts popular dataset-weeks (the seed's FNAL row has 1581 of them for 735 datasets)."""
    a, b = "/A/x-v1/AOD", "/B/y-v1/AOD"
    records = [(a, 0, SITE, 20), (a, 1, SITE, 20), (a, 2, SITE, 20), (b, 1, SITE, 1), (b, 1, "T2_DE_DESY", 5)]
    data = tmp_path / "popularity.csv"
    write_popularity(data, popularity_rows(records))
    out = tmp_path / "cache"
    proc = run_cmsdl("cache-sim", f"input={data}", f"out={out}", "progress=false", f"sites=[{SITE}]",
                     f"granularity={granularity}", "capacity_fractions=[0.5]", cwd=tmp_path)
    with open(out / "site_table.csv") as handle:
        row = next(csv.DictReader(handle))
    assert {k: row[k] for k in ("#DS", "#popular DS", "% popular DS", "#reads", "max weeks/DS",
                                "compulsory misses", "max hit rate")} == {
        "#DS": "4", "#popular DS": "3", "% popular DS": "75.0", "#reads": "61", "max weeks/DS": "3",
        "compulsory misses": "2", "max hit rate": "0.5"}
    assert "% popular DS: 100 x #popular DS / #DS" in proc.stdout


def write_predictions(path: Path, totals_names: np.ndarray, weeks: range, probs: np.ndarray,
                      horizons: tuple[int, ...] = (1,)) -> None:
    """A predictions.csv as `cmsdl popularity` writes it (plus a horizon column when not only next-week)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "week", "label", "size_gb", "p_dnn", *(["horizon"] if horizons != (1,) else [])])
        for h in horizons:
            for i, name in enumerate(totals_names):
                for j, week in enumerate(weeks):
                    writer.writerow([name, week, 0, 1.0, probs[h - 1, i, j], *([h] if horizons != (1,) else [])])


def hits_per_week(data: Path, predictions: Path | None, policy: str, *overrides: str) -> np.ndarray:
    """Hits in each week of one site's replay through `policy`, as `cmsdl cache-sim` runs it."""
    cfg = compose_run_config("cache_sim", [f"input={data}", f"predictions={predictions or 'null'}",
                                           "decision_threshold=0.5", *overrides])
    study = prepare_study(cfg)
    sim = site_simulator(study, SITE, cfg)
    start = sim.first_request_of_week(study.warmup_weeks)
    capacity = float(max(1, round(0.05 * sim.compulsory_misses)))
    result = sim.run(policy, capacity, protected=study.guards.get(policy), static=static_set(sim.items[:start]),
                     score_from=start)
    return np.bincount(sim.weeks, weights=result.hit_flags, minlength=study.totals.n_weeks).astype(int)


def change_from_week(columns: dict[str, np.ndarray], week: int, seed: int) -> dict[str, np.ndarray]:
    """What only week `week` and later know: new reads in those weeks, some later records gone, new datasets."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in columns.items()}
    later = out["week"] >= week
    out["naccess"][later] = rng.integers(1, 40, later.sum())
    last = out["week"].max()
    keep = ~((out["week"] > week) & (out["week"] < last) & (rng.random(len(later)) < 0.3))
    out = {k: v[keep] for k, v in out.items()}
    extra = np.flatnonzero(out["week"] > week)[:20]
    added = {k: v[extra].copy() for k, v in out.items()}
    added["dataset"] = np.array([f"/New{i}/z-v1/AOD" for i in range(len(extra))], dtype=object)
    added["tier"] = np.full(len(extra), "AOD", dtype=object)
    return {k: np.concatenate([out[k], added[k]]) for k in out}


@pytest.mark.parametrize("week", [5, 8, 12])
def test_replaying_a_week_uses_nothing_known_only_from_that_week_on(tmp_path: Path, week: int) -> None:
    """Reads and labels of week w and later, and predictions made from them, leave the hits of weeks <= w as
    they were, for every policy that is not an oracle (the old PPC used week w's labels or its reads)."""
    columns = simulate_popularity(n_datasets=400, n_weeks=16, seed=4)
    base, changed = tmp_path / "base.csv", tmp_path / "changed.csv"
    write_popularity(base, columns)
    write_popularity(changed, change_from_week(columns, week, seed=week))
    names = np.unique(columns["dataset"])
    rng = np.random.default_rng(week)
    probs = rng.random((1, len(names), 16))
    preds, preds_changed = tmp_path / "p.csv", tmp_path / "p_changed.csv"
    write_predictions(preds, names, range(16), probs)
    probs[:, :, week + 1:] = rng.random((1, len(names), 16 - week - 1))   # predictions made from weeks >= w
    write_predictions(preds_changed, names, range(16), probs)
    assert not np.array_equal(hits_per_week(base, None, "ppc100"), hits_per_week(changed, None, "ppc100"))
    for policy, before, after in [("lru", None, None), ("sdc", None, None), ("ppc", None, None),
                                  ("ppc", preds, preds_changed)]:
        old, new = hits_per_week(base, before, policy), hits_per_week(changed, after, policy)
        assert old[:week + 1].sum() > 0 and np.array_equal(old[:week + 1], new[:week + 1]), (policy, before)


def test_ppc_horizon_needs_predictions_that_far_ahead(tmp_path: Path) -> None:
    columns = simulate_popularity(n_datasets=200, n_weeks=10, seed=5)
    data = tmp_path / "popularity.csv"
    write_popularity(data, columns)
    names = np.unique(columns["dataset"])
    probs = np.random.default_rng(0).random((2, len(names), 10))
    next_week, two_weeks = tmp_path / "next.csv", tmp_path / "two.csv"
    write_predictions(next_week, names, range(10), probs)
    write_predictions(two_weeks, names, range(10), probs, horizons=(1, 2))
    proc = run_cmsdl("cache-sim", f"input={data}", f"out={tmp_path / 'refused'}", f"predictions={next_week}",
                     "horizon_weeks=2", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "horizon_weeks=2" in proc.stderr and "2 weeks ahead" in proc.stderr and not (tmp_path / "refused").exists()
    cfg = compose_run_config("cache_sim", [f"input={data}", f"predictions={two_weeks}", "horizon_weeks=2",
                                           "decision_threshold=0.5"])
    guard = prepare_study(cfg).guards["ppc"]
    ids = {name: i for i, name in enumerate(names)}
    flag = probs >= 0.5
    for name in names[:50]:
        i = ids[name]
        # week w: this week's prediction made one week ahead, or next week's made two weeks ahead
        assert guard[i, :-1].tolist() == (flag[0, i, :-1] | flag[1, i, 1:]).tolist()


def test_every_policy_is_scored_after_the_warmup_weeks(popularity_file: Path, tmp_path: Path) -> None:
    """SDC ranks its static set on the warm-up weeks; no policy is scored on them."""
    out = tmp_path / "cache"
    proc = run_cmsdl("cache-sim", f"input={popularity_file}", f"out={out}", "progress=false", f"sites=[{SITE}]",
                     "warmup_fraction=0.3", "capacity_fractions=[0.05]", cwd=tmp_path)
    with open(out / "hit_rates.csv") as handle:
        rates = list(csv.DictReader(handle))
    cfg = compose_run_config("cache_sim", [f"input={popularity_file}"])
    study = prepare_study(cfg)
    sim = site_simulator(study, SITE, cfg)
    scored = int((sim.weeks >= 9).sum())                 # 30 weeks: weeks 0-8 warm up
    assert study.warmup_weeks == 9 and 0 < scored < sim.requests
    assert {(r["policy"], int(r["requests"]), int(r["scored_from_week"])) for r in rates} == {
        (p, scored, 9) for p in ("lru", "opt", "ppc", "ppc100", "sdc")}
    assert "from week 9 on" in proc.stdout


def test_bad_predictions_file_is_one_error(popularity_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "predictions.csv"
    bad.write_text("dataset,week,label,size_gb,p_dnn\n/A/x-v1/AOD,3,0,1.0,high\n")
    for path, message in [(bad, "line 2"), (tmp_path / "missing.csv", "no such predictions file")]:
        cfg = compose_run_config("cache_sim", [f"input={popularity_file}", f"predictions={path}"])
        with pytest.raises(InputFormatError, match=message):
            prepare_study(cfg)
