"""RootTableDataModule: features from ROOT trees (local, root://, https://), streamed in bounded chunks.

Setup opens every file once (entries per work unit, branches checked) and makes one streaming pass that computes
the standardisation statistics on the training split, the per-class weight normalisation and the rows per split
and unit; with `cache_dir` the same pass writes the columnar cache (cmsdl/features/root_table/cache.py) that later epochs read.
Each event's split (train/val/test) follows from a hash of its file name and entry number (cmsdl.features.root_table.read.split_of).

Memory stays bounded by the work-unit size (`step_size`, entries or "50 MB") and the shuffle buffer, whatever the
number of files: work units are sharded across DDP ranks and DataLoader workers, read one at a time, and rows are
shuffled within a buffer of `shuffle_rows`. Batches are (features, label) or, with a weight, (features, label, weight).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from cmsdl.config import to_plain
from cmsdl.data.base import SPLITS, CmsdlDataModule, check_split_fractions
from cmsdl.errors import ConfigError
from cmsdl.features.root_table.cache import ColumnCache, cache_key
from cmsdl.features.root_table.read import FeatureChunk, ReadUnit, iterate_units, plan_units, read_ahead, split_of
from cmsdl.features.root_table.spec import FeatureSpec, parse_spec
from cmsdl.io.root import file_fingerprint

log = logging.getLogger(__name__)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1




class RowSource:
    """Rows of one split, unit by unit, from the cache when it is complete, else from the ROOT files."""

    def __init__(self, spec: FeatureSpec, units: list[ReadUnit], split: tuple[float, float, float], seed: int,
                 cache: ColumnCache | None) -> None:
        self.spec, self.units, self.split, self.seed, self.cache = spec, units, split, seed, cache

    def rows(self, indices: list[int], split_index: int) -> Iterator[tuple[int, FeatureChunk]]:
        """(unit index, selected rows of the split) for the given units, in the given order; the next unit is read
        in a background thread while this one is used (read_ahead)."""
        return read_ahead(self._rows(indices, split_index))

    def _rows(self, indices: list[int], split_index: int) -> Iterator[tuple[int, FeatureChunk]]:
        if self.cache is not None and self.cache.complete:
            for i in indices:
                chunk, splits = self.cache.read(i)
                yield i, chunk.take(splits == split_index)
            return
        for i, (unit, chunk) in zip(indices, iterate_units(self.spec, [self.units[i] for i in indices])):
            in_split = split_of(unit.path, chunk.entries, self.split, self.seed) == split_index
            yield i, chunk.take(chunk.selected & in_split)


class FeatureStream(IterableDataset):
    """Batches of one split: units sharded across ranks and workers, rows shuffled within a buffer."""

    def __init__(self, module: RootTableDataModule, split_index: int, batch_size: int, shuffle: bool,
                 ids: bool = False) -> None:
        self.module, self.split_index, self.batch_size, self.shuffle, self.ids = module, split_index, batch_size, shuffle, ids
        self.epoch = 0

    def _shard(self) -> tuple[list[int], int | None]:
        """This worker's unit indices and, under DDP, the number of batches every rank can give (else None)."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed() else (1, 0)
        slots = world * workers
        mine = list(range(rank * workers + worker, len(self.module.units), slots))
        if world == 1:
            return mine, None
        rows = self.module.rows_per_unit[:, self.split_index]
        per_rank = [rows[r * workers + worker::slots].sum() for r in range(world)]
        return mine, int(min(per_rank) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        units, limit = self._shard()
        m = self.module
        self.scaling = (m.mean, m.std, m.class_factors)
        rng = np.random.default_rng([m.seed, self.epoch, *(u for u in units[:1])])
        self.epoch += 1
        if self.shuffle:
            units = list(rng.permutation(units))
        batches = self._batches(units, rng)
        for n, batch in enumerate(batches):
            if limit is not None and n >= limit:
                return
            yield batch

    def _batches(self, units: list[int], rng: np.random.Generator) -> Iterator[Any]:
        pending: list[tuple[FeatureChunk, np.ndarray]] = []
        count = 0
        for index, chunk in self.module.source.rows(units, self.split_index):
            pending.append((chunk, np.full(len(chunk.entries), index, np.int32)))
            count += len(chunk.entries)
            if count >= self.module.shuffle_rows:
                rows, unit_of = merge(pending)
                order = rng.permutation(len(unit_of)) if self.shuffle else np.arange(len(unit_of))
                full = len(order) - len(order) % self.batch_size
                yield from self._cut(rows, unit_of, order[:full])
                pending, count = [(rows.take(order[full:]), unit_of[order[full:]])], len(order) - full
        if pending:
            rows, unit_of = merge(pending)
            yield from self._cut(rows, unit_of, rng.permutation(len(unit_of)) if self.shuffle else np.arange(len(unit_of)))

    def _cut(self, rows: FeatureChunk, unit_of: np.ndarray, order: np.ndarray) -> Iterator[Any]:
        """Batches of the rows in `order`, standardised (and weighted) once for the whole buffer."""
        if self.ids:
            for start in range(0, len(order), self.batch_size):
                yield [f"{self.module.units[unit_of[i]].path}:{rows.entries[i]}" for i in order[start:start + self.batch_size]]
            return
        mean, std, class_factors = self.scaling
        x = rows.features.take(order, axis=0)  # one gather in batch order; batches are then views of it
        x -= mean
        x /= std
        labels = rows.labels.take(order)
        weights = (rows.weights.take(order) * class_factors[labels]).astype(np.float32)
        weighted = self.module.spec.weight is not None
        for start in range(0, len(order), self.batch_size):
            end = start + self.batch_size
            batch = (torch.from_numpy(x[start:end]), torch.from_numpy(labels[start:end]))
            yield (*batch, torch.from_numpy(weights[start:end])) if weighted else batch


def merge(parts: list[tuple[FeatureChunk, np.ndarray]]) -> tuple[FeatureChunk, np.ndarray]:
    """One FeatureChunk (and unit index per row) from several."""
    chunks = [c for c, _ in parts]
    rows = FeatureChunk(*(np.concatenate([getattr(c, f) for c in chunks]) for f in
                   ("entries", "features", "labels", "weights", "selected")))
    return rows, np.concatenate([u for _, u in parts])


class RootTableDataModule(CmsdlDataModule, pl.LightningDataModule):
    """Streams the feature spec's rows; see the module docstring. Its state (spec, statistics) goes into every
    checkpoint and every exported model, so that eval, export and `cmsdl predict` rebuild the same features."""

    def __init__(self, spec: Mapping[str, Any], split: tuple[float, float, float] = (0.7, 0.15, 0.15),
                 batch_size: int = 512, eval_batch_size: int = 8192, step_size: int | str = "50 MB",
                 shuffle_rows: int = 100_000, standardize: bool = True, cache_dir: str | None = None,
                 num_workers: int = 0, pin_memory: bool = False, seed: int = 12345, timeout_s: float = 30,
                 retries: int = 3, task: str = "classification", progress: bool = True) -> None:
        super().__init__()
        if task != "classification":
            raise ConfigError(f"data.task: ROOT tables support classification, got {task!r}")
        split = check_split_fractions(split)
        self.spec_raw = to_plain(spec)
        self.spec = parse_spec(self.spec_raw)
        self.split = split
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.step_size = step_size
        self.shuffle_rows = max(int(shuffle_rows), batch_size)
        self.standardize = standardize
        self.cache_dir = cache_dir
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.seed, self.timeout_s, self.retries = seed, timeout_s, retries
        self.progress = progress
        self.task = task
        self.units: list[ReadUnit] = []
        self.stats: dict[str, Any] | None = None
        self.source: RowSource | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    @property
    def feature_names(self) -> list[str]:
        return self.spec.feature_names

    def setup(self, stage: str | None = None) -> None:
        if self.source is not None:
            return
        self.units = plan_units(self.spec, self.step_size, self.timeout_s, self.retries)
        cache = self._cache()
        self.source = RowSource(self.spec, self.units, self.split, self.seed, cache)
        if self.stats is None or (distributed() and len(self.stats.get("rows_per_unit", ())) != len(self.units)):
            self._scan(cache, keep=self.stats)  # DDP ranks need the rows per unit to give equal numbers of batches
        counted = "rows_per_unit" in self.stats
        log.info("ROOT table: %d features, %d files in %d units, %s, classes %s", len(self.feature_names),
                 len({u.path for u in self.units}), len(self.units),
                 f"train/val/test rows {self.rows_per_unit.sum(axis=0).tolist()}" if counted else
                 "statistics from the checkpoint", self.class_names)

    def _cache(self) -> ColumnCache | None:
        if not self.cache_dir:
            return None
        fingerprints = [file_fingerprint(p) for p in dict.fromkeys(u.path for u in self.units)]
        return ColumnCache(self.cache_dir, cache_key(self.spec_raw, self.split, self.seed, fingerprints, self.step_size))

    def _scan(self, cache: ColumnCache | None, keep: dict[str, Any] | None = None) -> None:
        """One streaming pass: statistics of the training rows, rows per split and unit, and the cache
        (`keep`: statistics from a checkpoint, kept; only the rows are counted)."""
        writing = cache is not None and not cache.complete
        if writing:
            cache.reset()
        n_features, n_classes = len(self.feature_names), len(self.class_names)
        sums, squares = np.zeros(n_features), np.zeros(n_features)
        weight_sums = np.zeros(n_classes)
        rows = np.zeros((len(self.units), 3), np.int64)
        reader = cache_rows(cache, len(self.units)) if cache is not None and cache.complete else self._root_rows()
        for index, chunk, splits in tqdm(reader, total=len(self.units), desc="scan ROOT files", unit="unit",
                                         disable=not self.progress):
            if writing:
                cache.write(index, chunk, splits)
            rows[index] = np.bincount(splits, minlength=3)[:3]
            train = chunk.take(splits == 0)
            sums += train.features.sum(axis=0, dtype=np.float64)
            squares += np.square(train.features, dtype=np.float64).sum(axis=0)
            weight_sums += np.bincount(train.labels, weights=train.weights, minlength=n_classes)
        if writing:
            cache.mark_complete({"units": len(self.units), "rows": rows.sum(axis=0).tolist()})
        self._set_stats(rows, sums, squares, weight_sums)
        if keep is not None:
            self.stats = {**keep, "rows_per_unit": rows.tolist()}

    def _root_rows(self) -> Iterator[tuple[int, FeatureChunk, np.ndarray]]:
        for index, (unit, chunk) in enumerate(read_ahead(iterate_units(self.spec, self.units))):
            chunk = chunk.take(chunk.selected)
            yield index, chunk, split_of(unit.path, chunk.entries, self.split, self.seed)

    def _set_stats(self, rows: np.ndarray, sums: np.ndarray, squares: np.ndarray, weight_sums: np.ndarray) -> None:
        n_train = int(rows[:, 0].sum())
        if n_train == 0:
            raise ConfigError("data.spec: no training rows (check the files, the selection and data.split)")
        empty = [c for c, w in zip(self.class_names, weight_sums) if w <= 0]
        if empty:
            raise ConfigError(f"data.spec: class {empty[0]!r} has no training rows with positive weight")
        mean = sums / n_train
        std = np.sqrt(np.maximum(squares / n_train - mean ** 2, 0))
        if not self.standardize:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        self.stats = {"mean": mean.tolist(), "std": np.where(std > 1e-6, std, 1.0).tolist(),
                      "class_factors": (n_train / len(self.class_names) / weight_sums).tolist(),
                      "rows_per_unit": rows.tolist()}

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.stats["mean"], np.float32)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.stats["std"], np.float32)

    @property
    def class_factors(self) -> np.ndarray:
        return np.asarray(self.stats["class_factors"], np.float32)

    @property
    def rows_per_unit(self) -> np.ndarray:
        """Rows per unit and split, counted by the scan (zeros when the statistics came from a checkpoint)."""
        rows = self.stats.get("rows_per_unit") or np.zeros((len(self.units), 3))
        return np.asarray(rows, np.int64).reshape(-1, 3)

    def _loader(self, name: str, shuffle: bool, ids: bool = False) -> DataLoader:
        self.setup()
        stream = FeatureStream(self, SPLITS.index(name), self.batch_size if shuffle else self.eval_batch_size,
                               shuffle, ids)
        workers = min(self.num_workers, len(self.units))
        return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=self.pin_memory and not ids,
                          persistent_workers=workers > 0 and not ids)

    def split_ids(self, name: str) -> list[str]:
        """`file:entry` of every row of a split, in the order split_loader(name) gives the rows."""
        return [i for batch in self._loader(name, shuffle=False, ids=True) for i in batch]

    def preprocessing(self) -> dict[str, Any]:
        """The spec and the statistics: enough to turn ROOT entries into model input (cmsdl.inference too)."""
        self.setup()
        return {"kind": "tabular", "task": self.task, "feature_names": self.feature_names,
                "class_names": self.class_names, "mean": self.stats["mean"], "std": self.stats["std"],
                "source": {"kind": "root_table", "spec": self.spec_raw, "split": list(self.split), "seed": self.seed,
                           "class_factors": self.stats["class_factors"]}}

    def state_dict(self) -> dict[str, Any]:
        """preprocessing() and the rows per unit (a resumed DDP run needs them to balance the ranks)."""
        return {**self.preprocessing(), "rows_per_unit": self.stats.get("rows_per_unit")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Statistics from a checkpoint (or an exported model's preprocessing); planned work units are kept (they
        depend on the spec and the files only), so restoring before `trainer.test` re-opens no file."""
        self.stats = {"mean": state["mean"], "std": state["std"],
                      "class_factors": state["source"].get("class_factors", [1.0] * len(self.class_names))}
        if state.get("rows_per_unit"):
            self.stats["rows_per_unit"] = state["rows_per_unit"]

    def net_inputs(self) -> dict[str, Any]:
        """Input size and, for set networks, where the first collection's slots are (with its count's scaling)."""
        self.setup()
        inputs: dict[str, Any] = {"in_features": len(self.feature_names)}
        layout = self.spec.set_layout()
        if layout:
            i = layout["count_index"]
            inputs["set_layout"] = {**layout, "count_mean": float(self.mean[i]), "count_std": float(self.std[i])}
        return inputs


def cache_rows(cache: ColumnCache, n_units: int) -> Iterator[tuple[int, FeatureChunk, np.ndarray]]:
    for index in range(n_units):
        chunk, splits = cache.read(index)
        yield index, chunk, splits
