"""Reading feature tables from ROOT files, local or remote, in bounded chunks: the spec's branches → numpy rows.

    units = plan_units(spec, step_size="50 MB")       # (file, entry range, class) work units, files opened once
    for unit in units:
        chunk = read_unit(spec, unit)                 # FeatureChunk: features [n, F] float32, labels, weights, selected
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, TypeVar

import awkward as ak
import numpy as np

from cmsdl.errors import CmsdlError, ConfigError, InputFormatError, closest
from cmsdl.features.root_table.spec import Collection, FeatureSpec, parse_spec
from cmsdl.io.root import branch_array, branch_names, match_files, open_root, resolve_branch

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ReadUnit:
    """A range of entries of one file, with the class of the file (-1: the label comes from a branch)."""

    path: str
    label: int
    entry_start: int
    entry_stop: int

    @property
    def n_entries(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass
class FeatureChunk:
    """Feature rows of one unit, one per entry, in entry order; `selected` marks rows that pass the selection."""

    entries: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    selected: np.ndarray

    def take(self, mask: np.ndarray) -> FeatureChunk:
        return FeatureChunk(self.entries[mask], self.features[mask], self.labels[mask], self.weights[mask],
                     self.selected[mask])


def expand_files(patterns: tuple[str, ...], where: str) -> list[str]:
    """Globs expanded (sorted; remote ones through the server's listing); a pattern that matches nothing is an error
    that says why (see match_files)."""
    files: list[str] = []
    for pattern in patterns:
        try:
            files += match_files(pattern)
        except InputFormatError as err:
            raise InputFormatError(f"{where}: {err}") from None
    return files


def open_tree(path: str, spec: FeatureSpec, timeout_s: float = 30, retries: int = 3) -> Any:
    """The spec's tree in `path`, with every branch the spec reads present (else one error naming them)."""
    handle = open_root(path, timeout_s=timeout_s, retries=retries)
    try:
        tree = handle[spec.tree]
    except Exception:
        names = sorted({k.split(";")[0] for k, c in handle.classnames().items() if c == "TTree"})
        hint = closest(spec.tree, names)
        raise InputFormatError(f"{path}: no tree {spec.tree!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                               + f"; trees in the file: {', '.join(names) or 'none'}") from None
    check_branches(tree, spec, path)
    return tree


def check_branches(tree: Any, spec: FeatureSpec, path: str) -> dict[str, str]:
    """The tree's name of every branch the spec reads (its own, or for `parent/child` a child stored at the top: see
    cmsdl.io.root.resolve_branch); one error for the first one the tree lacks, with the closest existing names."""
    existing = branch_names(tree)
    resolved = {}
    for name in spec.branches():
        key = resolve_branch(name, existing)
        if key is None:
            hint = closest(name, existing, n=5)
            raise InputFormatError(
                f"{path}: tree {spec.tree!r} has no branch {name!r}"
                + (f"; closest: {', '.join(hint)}" if hint else f"; it has {len(existing)} branches, e.g. "
                   + ", ".join(sorted(existing)[:12])))
        resolved[name] = key
    return resolved


def plan_units(spec: FeatureSpec, step_size: int | str = "50 MB", timeout_s: float = 30,
               retries: int = 3) -> list[ReadUnit]:
    """Work units of about `step_size` (entries, or bytes as "100 MB") for every file of every class."""
    units: list[ReadUnit] = []
    for label, (class_name, patterns) in enumerate(spec.files.items()):
        for path in expand_files(patterns, f"data.spec.files.{class_name}" if class_name else "data.spec.files"):
            tree = open_tree(path, spec, timeout_s, retries)
            units += file_units(path, tree, spec, -1 if spec.label else label, step_size)
    if not units:
        raise InputFormatError(f"data.spec.files: the files hold no entries in tree {spec.tree!r}")
    return units


def file_units(path: str, tree: Any, spec: FeatureSpec, label: int, step_size: int | str) -> list[ReadUnit]:
    """Entry ranges of one tree, `step_size` entries (an int) or bytes of the spec's branches (a string)."""
    n = int(tree.num_entries)
    if n == 0:
        log.warning("%s: tree %s is empty", path, spec.tree)
        return []
    step = step_size if isinstance(step_size, int) else entries_for_bytes(tree, spec.branches(), step_size, n)
    step = max(int(step), 1)
    return [ReadUnit(path, label, start, min(start + step, n)) for start in range(0, n, step)]


def entries_for_bytes(tree: Any, branches: list[str], size: str, n_entries: int, row_bytes: int = 0) -> int:
    """Entries whose uncompressed branch data make about `size` ("100 MB"), from the branches' metadata only
    (uproot's num_entries_for reads basket headers, which fails over fsspec-xrootd); RNTuples use uproot's estimate.
    With `row_bytes`: the entries whose rows of that many bytes make `size` (branches are not looked at)."""
    import uproot

    try:
        limit = uproot._util.memory_size(size)
    except (TypeError, ValueError):
        raise ConfigError(f"data.step_size: expected entries (an integer) or a size such as '100 MB', got {size!r}") from None
    if row_bytes:
        return max(1, int(limit // row_bytes))
    try:
        existing = branch_names(tree)
        total = sum(tree[resolve_branch(name, existing) or name].uncompressed_bytes for name in branches)
    except AttributeError:  # an RNTuple: its fields do not carry byte counts; uproot's estimate reads them
        return int(tree.num_entries_for(limit, filter_name=branches))
    return max(1, int(limit * n_entries / max(total, 1)))


def read_unit(spec: FeatureSpec, unit: ReadUnit, tree: Any = None) -> FeatureChunk:
    """Feature rows of a unit's entries (all of them; `selected` says which pass the selection)."""
    if tree is None:
        tree = open_tree(unit.path, spec)
    keys = check_branches(tree, spec, unit.path)
    try:
        arrays = tree.arrays(filter_name=list(dict.fromkeys(keys.values())), entry_start=unit.entry_start, entry_stop=unit.entry_stop,
                             library="ak", array_cache=None)  # uproot's per-file cache would keep every unit alive
    except CmsdlError:
        raise
    except Exception as err:
        raise InputFormatError(f"{unit.path}: cannot read entries {unit.entry_start}-{unit.entry_stop} "
                               f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    return compute_chunk(spec, {name: _branch(arrays, key, unit.path) for name, key in keys.items()}, unit)


def _branch(arrays: ak.Array, key: str, path: str) -> ak.Array:
    """A branch of what uproot read (in an RNTuple "Jet.pt" is the field pt of the record Jet; a subbranch
    `Jet/Jet.PT` comes back as `Jet.PT`)."""
    try:
        return branch_array(arrays, key)
    except KeyError:
        raise InputFormatError(f"{path}: branch {key!r} was read but uproot returned only {arrays.fields}") from None


def compute_chunk(spec: FeatureSpec, arrays: Mapping[str, ak.Array], unit: ReadUnit) -> FeatureChunk:
    """The spec applied to arrays of branches (by branch name) of the unit's entries: every column is written
    straight into one float32 table."""
    n = unit.n_entries
    columns = {name: arrays[spec.branch(name)] for e in spec.expressions() for name in e.names}
    features = np.empty((n, len(spec.feature_names)), np.float32)
    col = 0
    for name, branch in spec.flat.items():
        features[:, col] = _scalar(arrays[branch], f"{unit.path}: branch {branch!r} (flat column {name!r})", n)
        col += 1
    for name, e in spec.derived.items():
        features[:, col] = _scalar(e.evaluate(columns), f"{unit.path}: data.spec.derived.{name}", n)
        col += 1
    for collection in spec.collections:
        width = 1 + collection.length * len(collection.fields)
        fill_collection(collection, arrays, unit.path, features[:, col:col + width])
        col += width
    bad = ~np.isfinite(features)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise InputFormatError(f"{unit.path}: entry {unit.entry_start + row}: feature {spec.feature_names[col]!r} is "
                               f"{features[row, col]} (expected a finite number)")
    return FeatureChunk(np.arange(unit.entry_start, unit.entry_stop, dtype=np.int64), features, _labels(spec, columns, unit),
                 _weights(spec, columns, unit), _selection(spec, columns, unit))


def _scalar(values: Any, where: str, n: int) -> np.ndarray:
    """One number per entry; a list per entry is an error that says where lists belong."""
    if isinstance(values, ak.Array) and values.ndim > 1:
        raise ConfigError(f"{where}: holds a list per entry; use a collection, or a function such as sum(...) "
                          "or first(...) in a derived expression")
    array = np.asarray(ak.to_numpy(values) if isinstance(values, ak.Array) else values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n, float(array))
    if array.shape != (n,):
        raise ConfigError(f"{where}: expected one number per entry, got shape {array.shape}")
    return array


def fill_collection(collection: Collection, arrays: Mapping[str, ak.Array], path: str, out: np.ndarray) -> None:
    """Write the multiplicity and `length` slots of every field (sorted by `sort_by`, descending; padded;
    truncated) into `out` [entries, 1 + length * fields]: one gather from a table of all elements plus a pad row."""
    lists = {f: _flat_lists(arrays[b], f"{path}: branch {b!r} (collection {collection.name})")
             for f, b in collection.fields.items()}
    offsets = next(iter(lists.values()))[0]
    for f, (other, _) in lists.items():
        if not np.array_equal(other, offsets):
            raise InputFormatError(f"{path}: collection {collection.name}: branch {collection.fields[f]!r} has a "
                                   "different number of elements per entry than the other fields")
    n, total, slots = len(offsets) - 1, int(offsets[-1]), np.arange(collection.length)
    counts = np.diff(offsets)
    table = np.empty((total + 1, len(lists)), np.float32)
    for k, (_, content) in enumerate(lists.values()):
        table[:total, k] = content
    table[total] = collection.pad
    local = np.broadcast_to(slots, (n, collection.length))
    if collection.sort_by and total and not _descending(offsets, lists[collection.sort_by][1]):
        key = ak.unflatten(lists[collection.sort_by][1], counts)
        order = ak.to_numpy(ak.flatten(ak.argsort(key, axis=1, ascending=False, stable=True)))
        local = order[np.minimum(offsets[:-1, None] + slots, total - 1)]
    source = np.where(slots < counts[:, None], offsets[:-1, None] + local, total)
    out[:, 0] = counts
    np.take(table, source, axis=0, mode="clip",
            out=np.reshape(out[:, 1:], (n, collection.length, len(lists)), copy=False))  # slots written in place


def _flat_lists(values: ak.Array, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat content) of a list-per-entry array."""
    if values.ndim != 2:
        raise ConfigError(f"{where}: expected a list per entry (a jagged branch), got {values.ndim - 1} levels")
    layout = ak.to_layout(values)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets, dtype=np.int64)  # what uproot gives: no awkward call needed
        return offsets - offsets[0], np.asarray(layout.content.data)[offsets[0]:offsets[-1]]
    values = ak.to_packed(ak.from_regular(values, axis=1) if isinstance(ak.to_layout(values), ak.contents.RegularArray)
                          else values)
    offsets = np.asarray(ak.to_layout(values).offsets, dtype=np.int64)
    return offsets - offsets[0], ak.to_numpy(ak.flatten(values, axis=1))


def _descending(offsets: np.ndarray, key: np.ndarray) -> bool:
    """Whether `key` is already non-increasing within every entry (NanoAOD jets are sorted by pt)."""
    rising = np.diff(key) > 0
    rising[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] <= len(rising))] - 1] = False
    return not rising.any()


def _labels(spec: FeatureSpec, columns: Mapping[str, Any], unit: ReadUnit) -> np.ndarray:
    if spec.label is None:
        return np.full(unit.n_entries, unit.label, np.int64)
    labels = _scalar(spec.label.evaluate(columns), f"{unit.path}: data.spec.label", unit.n_entries)
    bad = (labels < 0) | (labels >= len(spec.class_names)) | (labels != np.round(labels))
    if bad.any():
        first = int(np.argmax(bad))
        raise InputFormatError(f"{unit.path}: entry {unit.entry_start + first}: label {labels[first]} is not a class "
                               f"index 0..{len(spec.class_names) - 1} ({', '.join(spec.class_names)})")
    return labels.astype(np.int64)


def _weights(spec: FeatureSpec, columns: Mapping[str, Any], unit: ReadUnit) -> np.ndarray:
    if spec.weight is None:
        return np.ones(unit.n_entries, np.float32)
    return _scalar(spec.weight.evaluate(columns), f"{unit.path}: data.spec.weight", unit.n_entries).astype(np.float32)


def _selection(spec: FeatureSpec, columns: Mapping[str, Any], unit: ReadUnit) -> np.ndarray:
    if spec.selection is None:
        return np.ones(unit.n_entries, bool)
    return _scalar(spec.selection.evaluate(columns), f"{unit.path}: data.spec.selection", unit.n_entries) != 0


def split_of(path: str, entries: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """0/1/2 (train/val/test) per entry, from a hash of the file's name and the entry number: stable whatever the
    chunking, the order of files, or whether the file is read locally or over XRootD."""
    key = np.uint64(zlib.crc32(f"{seed}:{PurePosixPath(path.split('?')[0]).name}".encode()))
    with np.errstate(over="ignore"):
        x = entries.astype(np.uint64) + key * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    u = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.searchsorted(np.cumsum(fractions)[:2], u, side="right").astype(np.int8)


def iterate_units(spec: FeatureSpec, units: list[ReadUnit]) -> Iterator[tuple[ReadUnit, FeatureChunk]]:
    """Chunks of the units in order, each file opened once for its consecutive units."""
    tree, current = None, None
    try:
        for unit in units:
            if unit.path != current:
                if tree is not None:
                    tree.file.close()
                tree, current = open_tree(unit.path, spec), unit.path
            yield unit, read_unit(spec, unit, tree)
    finally:
        if tree is not None:
            tree.file.close()


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of `items`, each produced by a background thread while the consumer uses the one before: decompression
    (zlib, lz4, zstd) and numpy release the GIL, so reading the next unit overlaps with using this one. At most two
    items are alive (the consumer's and the next). An error in the thread is raised here; stopping early (close,
    garbage collection) stops the thread and closes `items`."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue()
    may_produce = threading.Semaphore(1)  # released each time the consumer takes an item
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                while not may_produce.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(items)
                except StopIteration:
                    ready.put(("end", None))
                    return
                ready.put(("item", item))
        except BaseException as err:  # handed to the consumer, which raises it
            ready.put(("error", err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="cmsdl-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            may_produce.release()
            yield value
    finally:
        stop.set()
        thread.join()


def features_from_records(state: dict[str, Any], records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Raw (unscaled) feature rows for events given as records, one dict per event of branch name → value (a list
    for a jagged branch), e.g. ``{"nJet": 2, "Jet_pt": [61.0, 35.2], "MET_pt": 20.1}``, with the feature spec of a
    fitted RootTableDataModule state; label, weight and selection are not needed. Used by the torch-free predictor."""
    spec = replace(parse_spec(state["spec"]), label=None, weight=None, selection=None)
    records = list(records)
    for i, record in enumerate(records):
        missing = [branch for branch in spec.branches() if branch not in record]
        if missing:
            raise InputFormatError(f"records: record {i} has no branch {missing[0]!r} "
                                   f"(expected {', '.join(spec.branches())})")
    arrays = {branch: ak.Array([record[branch] for record in records]) for branch in spec.branches()}
    return compute_chunk(spec, arrays, ReadUnit("records", 0, 0, len(records))).features
