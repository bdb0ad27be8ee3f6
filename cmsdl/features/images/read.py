"""Reading hits from any ROOT tree through a branch mapping, in bounded chunks (uproot.iterate-style).

A mapping names the tree and the branches that hold hit coordinates, in the user's file, for example::

    tree: events                 # or a list of trees, or a path inside a directory: "dir/hits"
    branches: {x: hits.x, y: hits.y, z: hits.z, eta: null, phi: null, weight: hits.e, subdet: null, event: null}
    units: mm                    # cm | mm | m (positions are converted to cm)

Branches are jagged (one entry per event) or flat (one entry per hit, grouped by the `event` branch).
Instead of x/y/z, precomputed eta/phi may be given (then only the eta-phi projection is possible).
A branch is named by its full path (`TrackerHits/TrackerHits.position.x`, `Track/Track.X`), its own name
(`TrackerHits.position.x`) or, in an RNTuple, its field path (`TrackerHits.position.x`). Files are local or
remote (root://, https://) and opened by cmsdl.io.root.open_root, as the ROOT tables are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from cmsdl.errors import ConfigError, InputFormatError, closest
from cmsdl.io.root import branch_array, branch_names, open_root, resolve_branch

UNITS_TO_CM = {"cm": 1.0, "mm": 0.1, "m": 100.0, "um": 1e-4}
ROLES = ("x", "y", "z", "eta", "phi", "weight", "layer", "subdet", "event")


@dataclass(frozen=True)
class HitMapping:
    """Where the hits are in a ROOT file: tree names, branch per role, units, optional label branch."""

    trees: tuple[str, ...]
    branches: dict[str, str] = field(default_factory=dict)
    to_cm: float = 1.0
    label_branch: str | None = None

    @property
    def flat(self) -> bool:
        return "event" in self.branches

    @property
    def has_xyz(self) -> bool:
        return {"x", "y", "z"} <= set(self.branches)

    def needed(self) -> list[str]:
        """Branch names to read, each once."""
        names = list(self.branches.values()) + ([self.label_branch] if self.label_branch else [])
        return list(dict.fromkeys(names))


def regularize_mapping(tree: str | Sequence[str], branches: Mapping[str, Any], units: str = "cm",
                       label_branch: str | None = None) -> HitMapping:
    """Check and normalise the user's mapping in one place: known roles, coordinates present, known units."""
    trees = (tree,) if isinstance(tree, str) else tuple(tree)
    if not trees or not all(isinstance(t, str) and t for t in trees):
        raise ConfigError(f"tree: expected a tree name or a list of names, got {tree!r}")
    unknown = [k for k in branches if k not in ROLES]
    if unknown:
        hint = closest(unknown[0], ROLES)
        raise ConfigError(f"branches.{unknown[0]}: unknown role" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected some of {', '.join(ROLES)}")
    mapped = {k: str(v) for k, v in branches.items() if v not in (None, "")}
    if not ({"x", "y", "z"} <= set(mapped) or {"eta", "phi"} <= set(mapped)):
        raise ConfigError(f"branches: map x, y and z (or eta and phi) to branch names; got {sorted(mapped) or 'none'}")
    if units not in UNITS_TO_CM:
        raise ConfigError(f"units: got {units!r}, expected one of {', '.join(UNITS_TO_CM)}")
    return HitMapping(trees, mapped, UNITS_TO_CM[units], label_branch or None)


def open_tree(path: str | Path, tree: str, timeout_s: float = 30, retries: int = 3) -> Any:
    """The tree (TTree or RNTuple) `tree` of a local or remote ROOT file, opened by cmsdl.io.root.open_root;
    unreadable files, unreachable servers and missing trees raise one clear line."""
    handle = open_root(str(path), timeout_s=timeout_s, retries=retries)
    try:
        obj = handle[tree]
    except Exception:
        names = _tree_names(handle)
        hint = closest(tree, names)
        raise InputFormatError(f"{path}: no tree {tree!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                               + f"; trees in the file: {', '.join(names) or 'none'}") from None
    if not hasattr(obj, "iterate"):
        raise InputFormatError(f"{path}: {tree!r} is a {type(obj).__name__}, not a tree")
    return obj


def _tree_names(handle: Any) -> list[str]:
    try:
        return sorted({k.split(";")[0] for k, c in handle.classnames().items() if c in ("TTree", "ROOT::RNTuple")})
    except Exception:
        return []


def resolve_branches(tree: Any, mapping: HitMapping, path: str | Path, tree_name: str) -> dict[str, str]:
    """Role (and "label") → the tree's name of the mapped branch (a full path such as
    `TrackerHits/TrackerHits.position.x` or a short name); a missing one raises one line naming the file, the tree,
    the branch and the closest existing names."""
    existing = branch_names(tree)
    resolved = {}
    for role, name in [*mapping.branches.items(), ("label", mapping.label_branch)]:
        if not name:
            continue
        key = resolve_branch(name, existing)
        if key is None:
            hint = _closest_branch(name, existing)
            raise InputFormatError(
                f"{path}: tree {tree_name!r} has no branch {name!r} (mapped as {role})"
                + (f"; did you mean {hint!r}?" if hint else "") + f"; branches: {', '.join(existing[:30])}"
                + (" ..." if len(existing) > 30 else ""))
        resolved[role] = key
    return resolved


def _closest_branch(name: str, existing: Sequence[str]) -> str | None:
    """The existing branch most like `name` or its last path part, ignoring case (`position.X` → `position.x`)."""
    by_lower = {branch.lower(): branch for branch in existing}
    for candidate in dict.fromkeys((name, name.rsplit("/", 1)[-1])):
        hint = closest(candidate.lower(), by_lower)
        if hint:
            return by_lower[hint[0]]
    return None


@dataclass
class HitChunk:
    """Hits of consecutive events: per-event ids and labels, flat per-hit arrays with their event row."""

    entries: np.ndarray
    row: np.ndarray
    hits: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        return len(self.entries)

    def counts(self) -> np.ndarray:
        return np.bincount(self.row, minlength=self.n_events)


def iterate_chunks(path: str | Path, tree_name: str, mapping: HitMapping, step_size: int, entry_start: int = 0,
                   entry_stop: int | None = None, timeout_s: float = 30, retries: int = 3) -> Iterator[HitChunk]:
    """Chunks of at most `step_size` entries of one tree; in flat mode, events are grouped across chunks."""
    tree = open_tree(path, tree_name, timeout_s, retries)
    keys = resolve_branches(tree, mapping, path, tree_name)
    batches = tree.iterate(filter_name=list(dict.fromkeys(keys.values())), step_size=step_size, entry_start=entry_start,
                           entry_stop=entry_stop, library="ak", report=True)
    columns = ((_columns(batch, keys, mapping, path), report.tree_entry_start) for batch, report in batches)
    if not mapping.flat:
        yield from (_jagged_chunk(batch, first_entry, mapping, path) for batch, first_entry in columns)
        return
    yield from _group_flat(_flat_batches((batch for batch, _ in columns), mapping, path), mapping)


def _columns(batch: ak.Array, keys: Mapping[str, str], mapping: HitMapping, path: str | Path) -> dict[str, ak.Array]:
    """Role → the array of its branch in one batch (found by cmsdl.io.root.branch_array)."""
    return {role: _column(batch, key, mapping.branches.get(role, mapping.label_branch or key), path)
            for role, key in keys.items()}


def _column(batch: ak.Array, key: str, name: str, path: str | Path) -> ak.Array:
    try:
        values = branch_array(batch, key)
    except KeyError:
        raise InputFormatError(f"{path}: branch {name!r} was read but uproot returned only {batch.fields}") from None
    if values.ndim > 1 and isinstance(ak.to_layout(values), ak.contents.RegularArray):
        values = ak.from_regular(values, axis=1)
    if values.ndim > 2:
        raise InputFormatError(f"{path}: branch {name!r} is nested {values.ndim} deep; expected one value or a list per entry")
    return values


def _jagged_chunk(columns: dict[str, ak.Array], first_entry: int, mapping: HitMapping, path: str | Path) -> HitChunk:
    labels = ak.to_numpy(columns.pop("label")) if "label" in columns else None
    reference = next(iter(columns.values()))
    n = len(reference)
    counts = ak.to_numpy(ak.num(reference, axis=1)) if reference.ndim == 2 else np.ones(n, np.int64)
    hits = {}
    for role, values in columns.items():
        flat = ak.to_numpy(ak.flatten(values, axis=None)) if values.ndim == 2 else ak.to_numpy(values)
        if len(flat) != counts.sum():
            raise InputFormatError(f"{path}: branch {mapping.branches[role]!r} ({role}) has {len(flat)} hits in entries "
                                   f"{first_entry}-{first_entry + n - 1}, but the {next(iter(columns))} branch has {counts.sum()}")
        hits[role] = flat
    return HitChunk(np.arange(first_entry, first_entry + n), np.repeat(np.arange(n), counts), _to_cm(hits, mapping), labels)


def _to_cm(hits: dict[str, np.ndarray], mapping: HitMapping) -> dict[str, np.ndarray]:
    for role in ("x", "y", "z"):
        if role in hits:
            values = hits[role].astype(np.float64)
            hits[role] = values if mapping.to_cm == 1.0 else values * mapping.to_cm  # x * 1.0 is x: one pass less
    return hits


def _flat_batches(batches: Iterator[dict[str, ak.Array]], mapping: HitMapping,
                  path: str | Path) -> Iterator[dict[str, np.ndarray]]:
    for columns in batches:
        out = {role: ak.to_numpy(values) for role, values in columns.items()}
        for role, values in out.items():
            if values.ndim != 1:
                raise InputFormatError(f"{path}: branch {mapping.branches.get(role, mapping.label_branch)!r}: with an "
                                       "event branch, every branch must hold one value per entry (one hit per entry)")
        yield out


def _group_flat(batches: Iterator[dict[str, np.ndarray]], mapping: HitMapping) -> Iterator[HitChunk]:
    """One hit per entry → events (runs of equal `event` values); the last event of a batch waits for the next."""
    pending: dict[str, np.ndarray] | None = None
    for batch in batches:
        if pending is not None:
            batch = {k: np.concatenate([pending[k], batch[k]]) for k in batch}
        if not len(batch["event"]):
            continue
        cut = _last_run_start(batch["event"])
        pending = {k: v[cut:] for k, v in batch.items()}
        if cut:
            yield _flat_chunk({k: v[:cut] for k, v in batch.items()}, mapping)
    if pending is not None and len(pending["event"]):
        yield _flat_chunk(pending, mapping)


def _last_run_start(event: np.ndarray) -> int:
    changes = np.flatnonzero(np.diff(event) != 0)
    return int(changes[-1] + 1) if len(changes) else 0


def _flat_chunk(batch: dict[str, np.ndarray], mapping: HitMapping) -> HitChunk:
    starts = np.r_[0, np.flatnonzero(np.diff(batch["event"]) != 0) + 1]
    row = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(batch["event"])]))
    hits = {k: v for k, v in batch.items() if k not in ("event", "label")}
    labels = batch["label"][starts] if "label" in batch else None
    return HitChunk(batch["event"][starts].astype(np.int64), row, _to_cm(hits, mapping), labels)
