"""Scores back next to the events: one output file per input ROOT file, one row per input entry, in entry order.

`cmsdl predict model=top.onnx input="data/top/*.root" out=scores/` writes `scores/<input stem>_scores.root` with a
tree `Scores` (usable as a friend tree of the input's tree: same number of entries, same order) holding one branch
per class, `score_<class>` (float32, the class probability), and `selected` (bool, whether the entry passes the
model's selection; unselected entries are scored all the same). With `format=parquet`: `<stem>_scores.parquet`
with the same columns plus `entry`. Torch-free: the model's ONNX metadata carries the feature spec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cmsdl.errors import CmsdlError, InputFormatError
from cmsdl.io import atomic_path, atomic_write
from cmsdl.ntuple.read import file_units, open_tree, read_unit
from cmsdl.ntuple.spec import FeatureSpec, parse_spec

log = logging.getLogger(__name__)
FORMATS = ("root", "parquet")
SCORE_TREE = "Scores"


@dataclass
class FileScores:
    """Scores of every entry of one input file."""

    path: str
    entries: np.ndarray
    scores: np.ndarray
    selected: np.ndarray


def spec_of(preprocessing: dict[str, Any]) -> FeatureSpec:
    """The feature spec an exported ROOT-table model was trained with (from its metadata)."""
    source = preprocessing.get("source", {})
    if source.get("kind") != "root_table":
        raise CmsdlError(f"input: ROOT files need a model trained on ROOT tables; this model's data is "
                         f"{source.get('kind')!r}")
    return parse_spec(source["spec"])


def score_file(predictor: Any, spec: FeatureSpec, path: str, step_size: int | str = "50 MB") -> FileScores:
    """Every entry of `path` (not only those passing the selection) through the model, in entry order."""
    tree = open_tree(path, spec)
    entries, scores, selected = [], [], []
    for unit in file_units(path, tree, spec, 0, step_size):
        chunk = read_unit(spec, unit, tree)
        entries.append(chunk.entries)
        scores.append(predictor.run(predictor.scale(chunk.features)).outputs if len(chunk.entries) else
                      np.zeros((0, len(predictor.contract.class_names)), np.float32))
        selected.append(chunk.selected)
    n_classes = len(predictor.contract.class_names)
    if not entries:
        return FileScores(path, np.zeros(0, np.int64), np.zeros((0, n_classes), np.float32), np.zeros(0, bool))
    return FileScores(path, np.concatenate(entries), np.concatenate(scores).astype(np.float32),
                      np.concatenate(selected))


def output_path(out_dir: Path, path: str, fmt: str) -> Path:
    stem = PurePosixPath(path.split("?")[0]).name.removesuffix(".root")
    return out_dir / f"{stem}_scores.{fmt}"


def write_scores(result: FileScores, out: Path, class_names: list[str]) -> Path:
    """The scores as a ROOT tree `Scores` or a Parquet table, written to a temporary name and renamed."""
    columns = {f"score_{name}": result.scores[:, i] for i, name in enumerate(class_names)}
    columns["selected"] = result.selected
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_write(out, "wb") as handle:
            pq.write_table(pa.table({"entry": result.entries, **columns}), handle)
        return out
    return _write_root(out, columns)


def _write_root(out: Path, columns: dict[str, np.ndarray]) -> Path:
    """A TTree (ROOT's AddFriend takes TTrees; uproot's `file[name] = ...` would write an RNTuple)."""
    import uproot

    with atomic_path(out, ".root") as tmp, uproot.recreate(tmp) as handle:
        handle.mktree(SCORE_TREE, {name: values.dtype for name, values in columns.items()}).extend(columns)
    return out


def score_files(predictor: Any, paths: list[str], out_dir: Path, fmt: str = "root",
                progress: bool = True) -> tuple[list[Path], list[str]]:
    """Score every file into `out_dir`; a file that fails is reported (returned) and skipped."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise CmsdlError(f"format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    spec = spec_of(predictor.preprocessing)
    written, failed = [], []
    for path in tqdm(paths, desc="score ROOT files", unit="file", disable=not progress):
        try:
            result = score_file(predictor, spec, path)
            written.append(write_scores(result, output_path(out_dir, path, fmt), predictor.contract.class_names))
        except (CmsdlError, InputFormatError, ValueError) as err:
            message = str(err) if str(err).startswith(path) else f"{path}: {err}"
            log.error("skipped %s", message)
            failed.append(message)
    return written, failed
