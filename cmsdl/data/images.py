"""EventImageDataModule: the manifest written by `cmsdl hits2png` → stratified splits → uint8 image batches.

The split is written to disk once (`<cache_dir>/split-<key>.json`) and reused; the PNGs are decoded once into a
memory-mapped uint8 array (`<cache_dir>/images-<key>.npy`), so epochs never decode PNGs again. Batches stay
uint8 (4x less to copy to the GPU); the network turns them into floats on the device (cmsdl.models.resnet).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from cmsdl.data.base import SPLITS, CmsdlDataModule
from cmsdl.data.tabular import stratified_split
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.images.render import MIRROR_SYMMETRIC
from cmsdl.io import atomic_path, write_json

log = logging.getLogger(__name__)


def read_manifest(path: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Rows of manifest.csv and the hits2png.json beside it; a missing or malformed one raises one line."""
    if not path.is_file():
        raise InputFormatError(f"data.manifest: {path} does not exist (write it with `cmsdl hits2png out={path.parent}`)")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"path", "class"} - set(rows[0] if rows else {"path": 0, "class": 0})
    if missing:
        raise InputFormatError(f"{path}: expected columns path and class, missing {', '.join(sorted(missing))}")
    info_path = path.parent / "hits2png.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return rows, info


def first_per_class(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """The first `limit` rows of every class, in manifest order."""
    kept, seen = [], {}
    for row in rows:
        seen[row["class"]] = seen.get(row["class"], 0) + 1
        if seen[row["class"]] <= limit:
            kept.append(row)
    return kept


class ImageBatches(Dataset):
    """Indexed by a list of rows, returns a whole batch from the uint8 cache (flipped at random when augmenting)."""

    def __init__(self, cache: Path, rows: np.ndarray, labels: np.ndarray, flips: Sequence[int] = (), seed: int = 0) -> None:
        self.cache, self.rows, self.labels = str(cache), rows, torch.from_numpy(labels.astype(np.int64))
        self.flips, self.seed = tuple(flips), seed
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def images(self) -> np.ndarray:
        if self._images is None:  # opened lazily, once per worker process
            self._images = np.load(self.cache, mmap_mode="r")
        return self._images

    def __getitem__(self, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(batch)
        order = np.argsort(self.rows[index])
        x = np.empty((len(index), *self.images().shape[1:]), np.uint8)
        x[order] = self.images()[self.rows[index][order]]
        x = torch.from_numpy(x)
        for dim in self.flips:
            mask = torch.rand(len(index)) < 0.5
            x[mask] = x[mask].flip(dim)
        return x, self.labels[index]


class EventImageDataModule(CmsdlDataModule, pl.LightningDataModule):
    """Event images of some classes of a hits2png output, split 70/15/15 (stratified), served as uint8 batches."""

    def __init__(
        self,
        manifest: str,
        classes: Sequence[str] | None = None,
        split: Sequence[float] = (0.7, 0.15, 0.15),
        batch_size: int = 64,
        eval_batch_size: int = 256,
        cache_dir: str | None = None,
        augment_flips: bool = True,
        max_per_class: int | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        progress: bool = True,
        seed: int = 12345,
    ) -> None:
        super().__init__()
        self.manifest = Path(manifest)
        self.requested = list(classes) if classes else None
        self.split, self.seed = tuple(split), seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else self.manifest.parent / ".cache"
        self.augment_flips, self.max_per_class = augment_flips, max_per_class
        cuda = torch.cuda.is_available()
        self.num_workers = (4 if cuda else 0) if num_workers == "auto" else int(num_workers)
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.pin_memory = cuda if pin_memory == "auto" else bool(pin_memory)
        self.progress = progress
        self.info: dict[str, Any] = {}
        self.rows: list[dict[str, str]] = []
        self.labels = np.zeros(0, np.int64)
        self.split_rows: dict[str, np.ndarray] = {}
        self.cache_path: Path | None = None
        self._class_names: list[str] | None = None

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return list(self._class_names or [])

    def setup(self, stage: str | None = None) -> None:
        if self.cache_path is None:
            self._build()

    def _select(self) -> None:
        rows, self.info = read_manifest(self.manifest)
        present = list(dict.fromkeys(r["class"] for r in rows))
        ordered = [c for c in self.info.get("classes", []) if c in present] + [c for c in present if c not in self.info.get("classes", [])]
        names = self._class_names or self.requested or ordered
        unknown = [c for c in names if c not in present]
        if unknown or len(names) < 2:
            raise ConfigError(f"data.classes: {unknown or names} not usable; {self.manifest} has classes {', '.join(ordered)} "
                              "(need at least two)")
        self._class_names = list(names)
        index = {c: k for k, c in enumerate(names)}
        chosen = [r for r in rows if r["class"] in index]
        if self.max_per_class:
            chosen = first_per_class(chosen, self.max_per_class)
        self.rows = chosen
        self.labels = np.array([index[r["class"]] for r in chosen], np.int64)

    def _key(self) -> str:
        digest = hashlib.sha1(self.manifest.read_bytes())
        digest.update(json.dumps([self._class_names, self.max_per_class]).encode())
        return digest.hexdigest()[:16]

    def _build(self) -> None:
        self._select()
        key = self._key()
        self.split_rows = self._load_or_write_split(self.cache_dir / f"split-{key}-{self.seed}.json")
        self.cache_path = self._decode_once(self.cache_dir / f"images-{key}.npy")
        log.info("event images: %d x %s from %s, classes %s, train/val/test = %s", len(self.rows),
                 tuple(self.image_shape), self.manifest, self.class_names,
                 "/".join(str(len(self.split_rows[s])) for s in SPLITS))

    def _load_or_write_split(self, path: Path) -> dict[str, np.ndarray]:
        """The stratified split as row numbers; written once, then read back so that every run uses the same one."""
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("fractions") == list(self.split) and saved.get("n") == len(self.rows):
                return {s: np.asarray(saved[s], np.int64) for s in SPLITS}
        parts = stratified_split(self.labels, self.split, self.seed)
        write_json(path, {"fractions": list(self.split), "n": len(self.rows), "seed": self.seed,
                          **{s: p.tolist() for s, p in zip(SPLITS, parts)}}, indent=None)
        return dict(zip(SPLITS, parts))

    def _decode_once(self, path: Path) -> Path:
        """Decode every selected PNG into a uint8 .npy (N, C, H, W), written atomically; reused when present."""
        if path.is_file():
            return path
        from tqdm import tqdm

        from cmsdl.features.images.png import decode_png

        channels = len(self.info.get("channels", [])) or 1
        root = self.manifest.parent
        first = decode_png(root / self.rows[0]["path"], channels)
        with atomic_path(path, suffix=".npy") as tmp:
            images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(self.rows), *first.shape))
            for i, row in enumerate(tqdm(self.rows, desc="decode PNGs once", unit="image", disable=not self.progress)):
                try:
                    images[i] = decode_png(root / row["path"], channels)
                except (OSError, ValueError) as err:
                    raise InputFormatError(f"{root / row['path']}: cannot decode image ({err}); rerun hits2png") from None
            images.flush()
            del images
        return path

    @property
    def image_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(np.load(self.cache_path, mmap_mode="r").shape[1:])

    def dataset(self, name: str, augment: bool = False) -> ImageBatches:
        self.setup()
        rows = self.split_rows[name]
        flips = self.flip_dims() if augment and self.augment_flips else ()
        return ImageBatches(self.cache_path, rows, self.labels[rows], flips, self.seed)

    def flip_dims(self) -> tuple[int, ...]:
        """Dimensions of a (batch, C, H, W) tensor whose mirror image is a symmetry of every projection."""
        self.setup()
        projections = self.info.get("image", {}).get("projections", ["xy"])
        symmetric = [MIRROR_SYMMETRIC.get(name, (False, False)) for name in projections]
        return tuple(dim for dim, axis in ((2, 0), (3, 1)) if all(s[axis] for s in symmetric))

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        data = self.dataset(name, augment=shuffle)
        if shuffle:
            order = RandomSampler(data, generator=torch.Generator().manual_seed(self.seed))
            batches = BatchSampler(order, self.batch_size, drop_last=False)
        else:
            batches = BatchSampler(SequentialSampler(data), self.eval_batch_size, drop_last=False)
        workers = self.num_workers > 0
        return DataLoader(data, sampler=batches, batch_size=None, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=workers and self.persistent_workers,
                          prefetch_factor=self.prefetch_factor if workers else None)

    def split_ids(self, name: str) -> list[str]:
        self.setup()
        return [self.rows[i]["path"] for i in self.split_rows[name]]

    def net_inputs(self) -> dict[str, int]:
        return {"in_channels": int(self.image_shape[0])}

    def preprocessing(self) -> dict[str, Any]:
        """How raw hits become model input: the hits2png image settings, the classes, uint8 scaling."""
        self.setup()
        return {"kind": "image", "class_names": self.class_names, "shape": list(self.image_shape),
                "dtype": "uint8", "scale": 1 / 255, "channels": self.info.get("channels", []),
                "image": self.info.get("image", {}), "mapping": self.info.get("mapping", {})}

    def state_dict(self) -> dict[str, Any]:
        return self.preprocessing()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the checkpoint's classes (and their order); images and split are read from disk again."""
        self._class_names = list(state["class_names"])
        self.cache_path = None
