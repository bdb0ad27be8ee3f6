"""CacheSimulator: replay one site's access trace through LRU, Bélady OPT, PPC, PPC100 and SDC caches.

A trace is a sequence of item ids (datasets), the week of each request and a size per item (1 when the cache
counts datasets). Next-use times are computed once with numpy; OPT keeps a heap of them (lazy deletion), so
every policy is one pass over the trace. LRU and SDC admit every missed item that fits;
PPC never evicts a protected item for an unprotected one (that one is not cached); OPT does not cache an item
requested later than everything it would have to evict (Bélady with bypass: optimal for unit sizes). Imports neither torch nor Lightning.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from cmsdl.errors import ConfigError

POLICIES = ("lru", "opt", "ppc", "ppc100", "sdc")


@dataclass(frozen=True)
class SimResult:
    """Hits out of requests for one policy and cache size."""

    policy: str
    capacity: float
    hits: int
    requests: int

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

    def footprint(self) -> float:
        """Total size of the distinct items: a cache this large never evicts."""
        return float(self.sizes[np.unique(self.items)].sum())

    def run(self, policy: str, capacity: float, protected: np.ndarray | None = None,
            static: list[int] | None = None, static_fraction: float = 0.5) -> SimResult:
        """Hits of `policy` with a cache of `capacity` (in item-size units).

        protected: bool (items x weeks from the first week of the trace), the PPC/PPC100 'do not evict' flags;
        static: SDC's static candidates, most wanted first, filling up to static_fraction of the capacity.
        """
        if capacity <= 0:
            raise ConfigError(f"capacity: expected a positive cache size, got {capacity}")
        if policy == "lru":
            hits = self._lru(capacity)
        elif policy == "opt":
            hits = self._opt(capacity)
        elif policy in ("ppc", "ppc100"):
            if protected is None:
                raise ConfigError(f"{policy}: needs the protected (predicted popular) flags")
            hits = self._ppc(capacity, protected)
        elif policy == "sdc":
            hits = self._sdc(capacity, static or [], static_fraction)
        else:
            raise ConfigError(f"policy: got {policy!r}, expected one of {', '.join(POLICIES)}")
        return SimResult(policy, capacity, hits, self.requests)

    def _lru(self, capacity: float) -> int:
        if self.unit:
            return _lru_unit(self.items.tolist(), int(capacity))
        cache: OrderedDict[int, float] = OrderedDict()
        sizes = self.sizes.tolist()
        used, hits = 0.0, 0
        for x in self.items.tolist():
            if x in cache:
                cache.move_to_end(x)
                hits += 1
                continue
            size = sizes[x]
            if size > capacity:
                continue
            while used + size > capacity:
                used -= cache.popitem(last=False)[1]
            cache[x] = size
            used += size
        return hits

    def _opt(self, capacity: float) -> int:
        """Bélady: on a miss evict the cached items requested furthest in the future."""
        items, keys, sizes = self.items.tolist(), self.next.tolist(), self.sizes.tolist()
        n = len(items)
        cached: dict[int, int] = {}
        heap: list[int] = []
        used, hits = 0.0, 0
        push, pop = heapq.heappush, heapq.heappop
        for x, key in zip(items, keys):
            if x in cached:
                hits += 1
            else:
                size = sizes[x]
                if size > capacity:
                    continue
                if used + size > capacity and _furthest(heap, cached, items, n) < key:
                    continue
                while used + size > capacity:
                    k = -pop(heap)
                    y = items[k] if k < n else k - n
                    if cached.get(y) == k:
                        del cached[y]
                        used -= sizes[y]
                used += size
            cached[x] = key
            push(heap, -key)
            if len(heap) > 4 * len(cached) + 1024:
                heap = [-k for k in cached.values()]
                heapq.heapify(heap)
        return hits

    def _ppc(self, capacity: float, protected: np.ndarray) -> int:
        """LRU that evicts unprotected items first; protection is re-read at every new week."""
        items, weeks, sizes = self.items.tolist(), (self.weeks - self.first_week).tolist(), self.sizes.tolist()
        guarded: OrderedDict[int, float] = OrderedDict()
        free: OrderedDict[int, float] = OrderedDict()
        last: dict[int, int] = {}
        current, keep = -1, set()
        used, free_used, hits = 0.0, 0.0, 0
        for i, (x, week) in enumerate(zip(items, weeks)):
            if week != current:
                current = week
                keep = set(np.flatnonzero(protected[:, week]).tolist()) if week < protected.shape[1] else set()
                guarded, free = _partition(guarded, free, last, keep)
                free_used = sum(free.values())
            if x in guarded:
                guarded.move_to_end(x)
                hits += 1
            elif x in free:
                free.move_to_end(x)
                hits += 1
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
        return hits

    def _sdc(self, capacity: float, static: list[int], static_fraction: float) -> int:
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
        used, hits = 0.0, 0
        for x in self.items.tolist():
            if x in chosen:
                hits += x in seen
                seen.add(x)
            elif x in cache:
                cache.move_to_end(x)
                hits += 1
            elif sizes[x] <= dynamic_room:
                while used + sizes[x] > dynamic_room:
                    used -= cache.popitem(last=False)[1]
                cache[x] = sizes[x]
                used += sizes[x]
        return hits


def _furthest(heap: list[int], cached: dict[int, int], items: list[int], n: int) -> int:
    """The furthest next-use key among cached items (stale heap entries are dropped on the way)."""
    while heap:
        k = -heap[0]
        if cached.get(items[k] if k < n else k - n) == k:
            return k
        heapq.heappop(heap)
    return -1


def _lru_unit(items: list[int], capacity: int) -> int:
    """LRU when every item has size 1: the cache holds `capacity` items."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for x in items:
        if x in cache:
            cache.move_to_end(x)
            hits += 1
        else:
            if len(cache) >= capacity:
                cache.popitem(last=False)
            cache[x] = None
    return hits


def _partition(guarded: OrderedDict, free: OrderedDict, last: dict[int, int], keep: set[int]) -> tuple[OrderedDict, OrderedDict]:
    """Re-split the cached items into protected and free parts, each in least-recently-used order."""
    cached = sorted([*guarded.items(), *free.items()], key=lambda kv: last[kv[0]])
    new_guarded = OrderedDict((x, s) for x, s in cached if x in keep)
    new_free = OrderedDict((x, s) for x, s in cached if x not in keep)
    return new_guarded, new_free


def static_set(items: np.ndarray, sizes: np.ndarray, train_fraction: float) -> list[int]:
    """SDC's static candidates: items by request count in the first `train_fraction` of the trace, most first."""
    head = items[: max(1, int(len(items) * train_fraction))]
    ids, counts = np.unique(head, return_counts=True)
    return ids[np.lexsort((ids, -counts))].tolist()
