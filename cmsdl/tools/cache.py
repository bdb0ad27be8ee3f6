"""CacheSimulator: replay one site's access trace through LRU, Bélady OPT, PPC, PPC100 and SDC caches.

A trace is a sequence of item ids (datasets), the week of each request and a size per item (1 when the cache
counts datasets). Next-use times are computed once with numpy; OPT keeps a heap of them (lazy deletion), so
every policy is one pass over the trace. LRU and SDC admit every missed item that fits; PPC never evicts a
protected item for an unprotected one (that one is not cached); OPT never caches an item that is not requested
again and evicts by furthest next use, never an item needed before the one it admits (Bélady with bypass:
optimal for unit sizes; with sizes a heuristic, not a proven optimum). A run may replay a warm-up prefix
without scoring it. Imports neither torch nor Lightning.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from cmsdl.errors import ConfigError

POLICIES = ("lru", "opt", "ppc", "ppc100", "sdc")


@dataclass(frozen=True)
class SimResult:
    """Hits out of the scored requests (those from `score_from` on) for one policy and cache size."""

    policy: str
    capacity: float
    hits: int
    requests: int
    hit_flags: np.ndarray = field(repr=False, compare=False)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else float("nan")


def next_use(items: np.ndarray) -> np.ndarray:
    """For each request, the position of the next request of the same item; n + item when there is none."""
    n = len(items)
    order = np.argsort(items, kind="stable")
    ordered = items[order]
    out = n + items.astype(np.int64)
    same = ordered[1:] == ordered[:-1]
    out[order[:-1][same]] = order[1:][same]
    return out


class CacheSimulator:
    """One access trace, replayed through any policy and cache size."""

    def __init__(self, items: np.ndarray, weeks: np.ndarray | None = None, sizes: np.ndarray | None = None) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        if self.items.ndim != 1 or (len(self.items) and self.items.min() < 0):
            raise ConfigError("trace: items must be a 1-d array of non-negative item ids")
        n_items = int(self.items.max()) + 1 if len(self.items) else 0
        self.weeks = np.zeros(len(self.items), np.int64) if weeks is None else np.asarray(weeks, np.int64)
        if len(self.weeks) != len(self.items) or (np.diff(self.weeks) < 0).any():
            raise ConfigError("trace: weeks must give one non-decreasing week per request")
        self.first_week = int(self.weeks.min()) if len(self.weeks) else 0
        self.sizes = np.ones(n_items) if sizes is None else np.asarray(sizes, dtype=np.float64)
        if len(self.sizes) < n_items or (self.sizes[:n_items] < 0).any():
            raise ConfigError(f"trace: sizes must give a non-negative size for each of the {n_items} items")
        self.unit = bool(np.all(self.sizes[np.unique(self.items)] == 1.0))
        self.next = next_use(self.items)

    @property
    def requests(self) -> int:
        return len(self.items)

    @property
    def compulsory_misses(self) -> int:
        """First requests of each item: a miss for every cache that starts empty."""
        return int(len(np.unique(self.items)))

    @property
    def max_hit_rate(self) -> float:
        """1 - compulsory misses / requests: the hit rate of an infinite cache."""
        return 1.0 - self.compulsory_misses / self.requests if self.requests else float("nan")

    def first_request_of_week(self, week: int) -> int:
        """Index of the first request in `week` or later (the trace's weeks are non-decreasing)."""
        return int(np.searchsorted(self.weeks, week))

    def max_hits_from(self, start: int) -> int:
        """Most hits any cache can score on requests start..: those that are not an item's first request."""
        first = np.unique(self.items, return_index=True)[1]
        return self.requests - start - int((first >= start).sum())

    def footprint(self) -> float:
        """Total size of the distinct items: a cache this large never evicts."""
        return float(self.sizes[np.unique(self.items)].sum())

    def run(self, policy: str, capacity: float, protected: np.ndarray | None = None,
            static: list[int] | None = None, static_fraction: float = 0.5, score_from: int = 0) -> SimResult:
        """Hits of `policy` with a cache of `capacity` (in item-size units) on requests score_from..

        The requests before `score_from` warm the cache up and are not counted.
        protected: bool (items x weeks from the first week of the trace), the PPC/PPC100 'do not evict' flags;
        static: SDC's static candidates, most wanted first, filling up to static_fraction of the capacity.
        """
        if capacity <= 0:
            raise ConfigError(f"capacity: expected a positive cache size, got {capacity}")
        if not 0 <= score_from <= self.requests:
            raise ConfigError(f"score_from: expected a request index in 0..{self.requests}, got {score_from}")
        if policy == "lru":
            flags = self._lru(capacity)
        elif policy == "opt":
            flags = self._opt(capacity)
        elif policy in ("ppc", "ppc100"):
            if protected is None:
                raise ConfigError(f"{policy}: needs the protected (predicted popular) flags")
            flags = self._ppc(capacity, protected)
        elif policy == "sdc":
            flags = self._sdc(capacity, static or [], static_fraction)
        else:
            raise ConfigError(f"policy: got {policy!r}, expected one of {', '.join(POLICIES)}")
        hit_flags = np.frombuffer(flags, dtype=np.uint8).astype(bool)
        hit_flags[:score_from] = False
        return SimResult(policy, capacity, int(hit_flags.sum()), self.requests - score_from, hit_flags)

    def _lru(self, capacity: float) -> bytearray:
        if self.unit:
            return _lru_unit(self.items.tolist(), int(capacity))
        cache: OrderedDict[int, float] = OrderedDict()
        sizes = self.sizes.tolist()
        used, hit = 0.0, bytearray(self.requests)
        for i, x in enumerate(self.items.tolist()):
            if x in cache:
                cache.move_to_end(x)
                hit[i] = 1
                continue
            size = sizes[x]
            if size > capacity:
                continue
            while used + size > capacity:
                used -= cache.popitem(last=False)[1]
            cache[x] = size
            used += size
        return hit

    def _opt(self, capacity: float) -> bytearray:
        """Bélady with bypass: cache a missed item only if it is requested again and room can be made by
        evicting items whose next request comes after its own, furthest first."""
        items, keys, sizes = self.items.tolist(), self.next.tolist(), self.sizes.tolist()
        n = len(items)
        cached: dict[int, int] = {}
        heap: list[int] = []
        used, hit = 0.0, bytearray(n)
        for i, (x, key) in enumerate(zip(items, keys)):
            if x in cached:
                hit[i] = 1
            else:
                size = sizes[x]
                if key >= n or size > capacity:
                    continue
                if used + size > capacity:
                    victims = _furthest_until(heap, cached, items, n, key, used + size - capacity, sizes)
                    if victims is None:
                        continue
                    for y in victims:
                        del cached[y]
                        used -= sizes[y]
                used += size
            cached[x] = key
            heapq.heappush(heap, -key)
            if len(heap) > 4 * len(cached) + 1024:
                heap = [-k for k in cached.values()]
                heapq.heapify(heap)
        return hit

    def _ppc(self, capacity: float, protected: np.ndarray) -> bytearray:
        """LRU that evicts unprotected items first; protection is re-read at every new week."""
        items, weeks, sizes = self.items.tolist(), (self.weeks - self.first_week).tolist(), self.sizes.tolist()
        guarded: OrderedDict[int, float] = OrderedDict()
        free: OrderedDict[int, float] = OrderedDict()
        last: dict[int, int] = {}
        current, keep = -1, set()
        used, free_used, hit = 0.0, 0.0, bytearray(self.requests)
        for i, (x, week) in enumerate(zip(items, weeks)):
            if week != current:
                current = week
                keep = set(np.flatnonzero(protected[:, week]).tolist()) if week < protected.shape[1] else set()
                guarded, free = _partition(guarded, free, last, keep)
                free_used = sum(free.values())
            if x in guarded:
                guarded.move_to_end(x)
                hit[i] = 1
            elif x in free:
                free.move_to_end(x)
                hit[i] = 1
            else:
                size = sizes[x]
                if size > capacity:
                    continue
                if x not in keep and used - free_used + size > capacity:
                    continue
                while used + size > capacity:
                    if free:
                        evicted = free.popitem(last=False)[1]
                        free_used -= evicted
                    else:
                        evicted = guarded.popitem(last=False)[1]
                    used -= evicted
                if x in keep:
                    guarded[x] = size
                else:
                    free[x] = size
                    free_used += size
                used += size
            last[x] = i
        return hit

    def _sdc(self, capacity: float, static: list[int], static_fraction: float) -> bytearray:
        """Static part (never evicted, filled on first request) + LRU dynamic part."""
        sizes = self.sizes.tolist()
        static_room = capacity * static_fraction
        chosen, total = set(), 0.0
        for x in static:
            if total + sizes[x] <= static_room:
                chosen.add(x)
                total += sizes[x]
        seen: set[int] = set()
        dynamic_room = capacity - total
        cache: OrderedDict[int, float] = OrderedDict()
        used, hit = 0.0, bytearray(self.requests)
        for i, x in enumerate(self.items.tolist()):
            if x in chosen:
                hit[i] = x in seen
                seen.add(x)
            elif x in cache:
                cache.move_to_end(x)
                hit[i] = 1
            elif sizes[x] <= dynamic_room:
                while used + sizes[x] > dynamic_room:
                    used -= cache.popitem(last=False)[1]
                cache[x] = sizes[x]
                used += sizes[x]
        return hit


def _furthest_until(heap: list[int], cached: dict[int, int], items: list[int], n: int, key: int, room: float,
                    sizes: list[float]) -> list[int] | None:
    """Cached items to evict, furthest next use first, until `room` is freed, all requested after `key`;
    None (and the heap as it was) when those items cannot free enough. Stale heap entries are dropped."""
    popped: list[int] = []
    victims: list[int] = []
    freed = 0.0
    while heap and freed < room:
        k = -heap[0]
        if k <= key:
            break
        heapq.heappop(heap)
        y = items[k] if k < n else k - n
        if cached.get(y) != k:
            continue
        popped.append(k)
        victims.append(y)
        freed += sizes[y]
    if freed < room:
        for k in popped:
            heapq.heappush(heap, -k)
        return None
    return victims


def _lru_unit(items: list[int], capacity: int) -> bytearray:
    """LRU when every item has size 1: the cache holds `capacity` items."""
    cache: OrderedDict[int, None] = OrderedDict()
    hit = bytearray(len(items))
    for i, x in enumerate(items):
        if x in cache:
            cache.move_to_end(x)
            hit[i] = 1
        else:
            if len(cache) >= capacity:
                cache.popitem(last=False)
            cache[x] = None
    return hit


def _partition(guarded: OrderedDict, free: OrderedDict, last: dict[int, int],
               keep: set[int]) -> tuple[OrderedDict, OrderedDict]:
    """Re-split the cached items into protected and free parts, each in least-recently-used order."""
    cached = sorted([*guarded.items(), *free.items()], key=lambda kv: last[kv[0]])
    new_guarded = OrderedDict((x, s) for x, s in cached if x in keep)
    new_free = OrderedDict((x, s) for x, s in cached if x not in keep)
    return new_guarded, new_free


def static_set(warmup_items: np.ndarray) -> list[int]:
    """SDC's static candidates: items by request count in the warm-up part of a trace, most first."""
    ids, counts = np.unique(warmup_items, return_counts=True)
    return ids[np.lexsort((ids, -counts))].tolist()
