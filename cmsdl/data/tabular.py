"""TabularDataModule: any tabular source (workflows, popularity, transfers) → stratified splits → batches.

A *source* loads records with integer labels and fits its feature builder on the training split only;
this module splits, standardises with statistics of the training split, and serves whole-batch tensors.
Its state (the fitted source and the scaling) travels inside every checkpoint for eval and export.
``balance`` counters imbalanced classes during training, from training-split counts only: ``weights`` gives each
training row the weight n / (n_classes * n_class) in the loss; ``oversample`` draws every epoch's training rows with
replacement so that each class is drawn equally often (as many rows per epoch as the training split has).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Sampler

from cmsdl.data.base import CmsdlDataModule, check_split_fractions
from cmsdl.errors import ConfigError, InputFormatError

log = logging.getLogger(__name__)
TASKS = ("classification", "regression")
BALANCES = ("none", "weights", "oversample")


class TabularSource(Protocol):
    """What TabularDataModule needs from a data source."""

    class_names: list[str]
    feature_names: list[str]
    fitted: bool

    def load(self) -> tuple[Sequence[Any], np.ndarray]: ...
    def fit(self, records: Sequence[Any]) -> Any: ...
    def transform(self, records: Sequence[Any]) -> np.ndarray: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BatchTensors(Dataset):
    """Indexed by a list of row numbers, returns the whole batch at once (one gather instead of one per row)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        self.features, self.labels, self.weights = features, labels, weights

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: torch.Tensor | list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(rows)
        if self.weights is None:
            return self.features[index], self.labels[index]
        return self.features[index], self.labels[index], self.weights[index]


class IndexBatches(Sampler[torch.Tensor]):
    """Each batch's row numbers as one tensor, from one draw of `order` per epoch (sequential without it): a
    BatchSampler's lists of ints cost about 60 µs more per batch, 2% of a small MLP's step."""

    def __init__(self, n: int, batch_size: int, order: Callable[[], torch.Tensor] | None = None) -> None:
        self.n, self.batch_size, self.order = n, batch_size, order

    def __iter__(self) -> Iterator[torch.Tensor]:
        rows = self.order() if self.order is not None else torch.arange(self.n)
        return iter(rows.split(self.batch_size))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def shuffled_rows(n: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of n rows drawn as RandomSampler draws it (it draws a second, unused one per pass), so that a
    seed shuffles the epochs as it did with RandomSampler."""
    rows = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)
    return rows


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per row, n / (n_classes * n_class): every class present weighs as much in total as the others."""
    counts = np.bincount(labels)
    present = counts > 0
    per_class = np.where(present, len(labels) / (present.sum() * np.maximum(counts, 1)), 0.0)
    return per_class[labels]


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int, stratified: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train/val/test, each keeping the class mix of `labels` (plain random without `stratified`)."""
    fractions = check_split_fractions(fractions)
    rows = np.arange(len(labels))
    counts = np.bincount(labels) if stratified else np.zeros(1, np.int64)
    stratify = labels if stratified and counts[counts > 0].min() >= 3 else None
    try:
        train, rest = train_test_split(rows, train_size=fractions[0], stratify=stratify, random_state=seed)
        val_share = fractions[1] / (fractions[1] + fractions[2])
        rest_stratify = labels[rest] if stratify is not None else None
        val, test = train_test_split(rest, train_size=val_share, stratify=rest_stratify, random_state=seed)
    except ValueError as err:
        raise ConfigError(f"data.split: cannot split {len(labels)} records into {list(fractions)}: {err}") from None
    return np.sort(train), np.sort(val), np.sort(test)


class TabularDataModule(CmsdlDataModule, pl.LightningDataModule):
    """Splits a tabular source, fits features and scaling on the training split, and batches tensors."""

    def __init__(
        self,
        source: TabularSource,
        split: Sequence[float] = (0.7, 0.15, 0.15),
        batch_size: int = 256,
        eval_batch_size: int = 4096,
        standardize: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 12345,
        task: str = "classification",
        balance: str = "none",
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"data.task: got {task!r}, expected one of {', '.join(TASKS)}")
        if balance not in BALANCES or (balance != "none" and task == "regression"):
            raise ConfigError(f"data.balance: got {balance!r}, expected one of {', '.join(BALANCES)} "
                              "(none for regression)")
        self.task = task
        self.balance = balance
        self.source = source
        self.split = tuple(split)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.standardize = standardize
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.records: Sequence[Any] = ()
        self.splits: dict[str, BatchTensors] = {}
        self.split_rows: dict[str, np.ndarray] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    @property
    def feature_names(self) -> list[str]:
        return list(self.source.feature_names)

    @property
    def num_features(self) -> int:
        self.setup()
        return len(self.feature_names)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._build()

    def _build(self) -> None:
        records, labels = self.source.load()
        regression = self.task == "regression"
        if not regression and self.mean is None:  # fitting on these records (eval of a fitted model may see one)
            self._check_classes(labels)
        train, val, test = stratified_split(labels, self.split, self.seed, stratified=not regression)
        if not self.source.fitted:
            self.source.fit([records[i] for i in train])
        features = self.source.transform(records)
        if self.mean is None:
            self._fit_scaling(features[train])
        features = (features - self.mean) / self.std
        self._check_finite(features, labels, records)
        x = torch.from_numpy(features.astype(np.float32))
        y = torch.from_numpy(labels.astype(np.float32 if regression else np.int64))
        self.records = records
        self.split_rows = {"train": train, "val": val, "test": test}
        self.splits = {name: BatchTensors(x[rows], y[rows]) for name, rows in self.split_rows.items()}
        log.info(
            "tabular data: %d features, train/val/test = %d/%d/%d, classes %s",
            x.shape[1], len(train), len(val), len(test), self.class_names,
        )

    def _source_name(self) -> str:
        return str(getattr(self.source, "path", type(self.source).__name__))

    def _check_classes(self, labels: np.ndarray) -> None:
        """A classifier needs records of at least two classes; one class alone would train to a meaningless score."""
        present = np.unique(labels)
        if len(present) < 2:
            found = ", ".join(repr(self.class_names[int(k)]) for k in present) or "no records"
            raise InputFormatError(f"{self._source_name()}: every record has class {found}; training a classifier "
                                   f"needs records of at least two of {self.class_names}")

    def _check_finite(self, features: np.ndarray, labels: np.ndarray, records: Sequence[Any]) -> None:
        """Never train on NaN: a non-finite scaled feature or target stops the run, naming the record and column."""
        bad = ~np.isfinite(features)
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            name = str(getattr(records[row], "name", row))
            raise InputFormatError(f"{self._source_name()}: record {name!r} has feature {self.feature_names[column]!r}"
                                   f" = {features[row, column]} after scaling; features must be finite float32")
        if labels.dtype.kind == "f" and not np.isfinite(labels.astype(np.float32)).all():
            row = int(np.flatnonzero(~np.isfinite(labels.astype(np.float32)))[0])
            name = str(getattr(records[row], "name", row))
            raise InputFormatError(f"{self._source_name()}: record {name!r} has target {labels[row]}; targets must be "
                                   "finite float32")

    def _fit_scaling(self, train_features: np.ndarray) -> None:
        """Mean and standard deviation of the training features, computed in float64 (float32 sums overflow)."""
        n = train_features.shape[1]
        if not self.standardize:
            self.mean, self.std = np.zeros(n, np.float32), np.ones(n, np.float32)
            return
        wide = train_features.astype(np.float64)
        self.mean = wide.mean(axis=0).astype(np.float32)
        std = wide.std(axis=0).astype(np.float32)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.splits[name]
        if shuffle:
            data = self._training_data(data)
            batches = IndexBatches(len(data), self.batch_size, self._training_order(data))
        else:
            batches = IndexBatches(len(data), self.eval_batch_size)
        return DataLoader(
            data,
            sampler=batches,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _training_data(self, data: BatchTensors) -> BatchTensors:
        """The training rows; with balance=weights each carries its class weight (only in the training loader)."""
        if self.balance != "weights":
            return data
        weights = torch.from_numpy(class_weights(data.labels.numpy()).astype(np.float32))
        return BatchTensors(data.features, data.labels, weights)

    def _training_order(self, data: BatchTensors) -> Callable[[], torch.Tensor]:
        """Each epoch's rows: shuffled; with balance=oversample, drawn with replacement so every class is equally
        likely (the draws of RandomSampler and WeightedRandomSampler with the same generator)."""
        generator = torch.Generator().manual_seed(self.seed)
        if self.balance != "oversample":
            return partial(shuffled_rows, len(data), generator)
        draw = torch.from_numpy(class_weights(data.labels.numpy()))
        return partial(torch.multinomial, draw, len(data), True, generator=generator)

    def preprocessing(self) -> dict[str, Any]:
        """Everything needed to turn raw records into model input: the fitted source and the scaling."""
        self.setup()
        return {
            "kind": "tabular",
            "task": self.task,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "defaults": dict(getattr(self.source, "feature_defaults", {})),  # features a row may leave out
            "source": self.source.state_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.preprocessing()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a fitted source and scaling (from a checkpoint); features are rebuilt with them."""
        if self.splits and state == self.preprocessing():
            return
        self.source.load_state_dict(state["source"])
        self.mean = np.asarray(state["mean"], dtype=np.float32)
        self.std = np.asarray(state["std"], dtype=np.float32)
        self.splits = {}

    def net_inputs(self) -> dict[str, int]:
        """Input size arguments for the network, filled into the model config."""
        return {"in_features": self.num_features}

    def split_ids(self, name: str) -> list[str]:
        """Identifiers of the rows of a split (record names where records have one)."""
        self.setup()
        return [str(getattr(self.records[i], "name", i)) for i in self.split_rows[name]]

