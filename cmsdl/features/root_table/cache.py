"""The columnar cache: feature rows of every work unit in a Parquet file, so that later epochs skip ROOT decoding.

Layout: `<cache_dir>/<key>/unit-00012.parquet` (columns: entry int64, label int64, weight float32, split int8,
features fixed-size list of float32; only rows that pass the selection) and `complete.json` once every unit is
written. The key is a hash of the spec, the split and the files' fingerprints (size and modification time, or
the server's stat for remote files): change any of them and a new cache is built beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmsdl.features.root_table.read import FeatureChunk
from cmsdl.io import atomic_write, write_json


def cache_key(spec: dict[str, Any], split: tuple[float, ...], seed: int, fingerprints: list[str],
              step_size: int | str) -> str:
    """A short hash of everything that decides the cached rows."""
    text = json.dumps({"spec": spec, "split": list(split), "seed": seed, "files": fingerprints,
                       "step_size": step_size}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ColumnCache:
    """One cache directory (`root/key`); unit files are written atomically, `complete.json` last."""

    root: Path
    key: str

    @property
    def directory(self) -> Path:
        return Path(self.root) / self.key

    def unit_path(self, index: int) -> Path:
        return self.directory / f"unit-{index:05d}.parquet"

    @property
    def complete(self) -> bool:
        return (self.directory / "complete.json").is_file()

    def write(self, index: int, chunk: FeatureChunk, split: np.ndarray) -> None:
        n_features = chunk.features.shape[1]
        features = pa.FixedSizeListArray.from_arrays(pa.array(chunk.features.reshape(-1), pa.float32()), n_features)
        table = pa.table({"entry": chunk.entries, "label": chunk.labels, "weight": chunk.weights,
                          "split": split.astype(np.int8), "features": features})
        with atomic_write(self.unit_path(index), "wb") as handle:
            pq.write_table(table, handle, compression="zstd")

    def read(self, index: int) -> tuple[FeatureChunk, np.ndarray]:
        """A unit's cached rows (all selected) and their split numbers."""
        table = pq.read_table(self.unit_path(index))
        features = table.column("features").combine_chunks()
        n_features = features.type.list_size
        values = features.flatten().to_numpy().reshape(-1, n_features)
        n = len(values)
        chunk = FeatureChunk(table.column("entry").to_numpy(), values, table.column("label").to_numpy(),
                      table.column("weight").to_numpy(), np.ones(n, bool))
        return chunk, table.column("split").to_numpy()

    def mark_complete(self, info: dict[str, Any]) -> None:
        write_json(self.directory / "complete.json", info)

    def reset(self) -> None:
        """Remove a partly written cache of this key (a scan that did not finish)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)


__all__ = ["ColumnCache", "cache_key"]
