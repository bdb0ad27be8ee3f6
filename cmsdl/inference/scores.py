"""Scores back next to the events: one output file per input ROOT file, one row per input entry, in entry order.

`cmsdl predict model=top.onnx input="data/top/*.root" out=scores/` writes `scores/<input stem>_scores.root` with a
tree `Scores` (usable as a friend tree of the input's tree: same number of entries, same order) holding one branch
per class, `score_<class>` (float32, the class probability), and `selected` (bool, whether the entry passes the
model's selection; unselected entries are scored all the same). With `format=parquet`: `<stem>_scores.parquet`
with the same columns plus `entry`. Inputs that share a file name (CRAB's `tree_1.root` in many job folders) are
told apart by a short hash of their full path: `<stem>-<6 hex digits>_scores.root`, the same on every run over the
same inputs. Temporary files that a killed run left in the output directory are removed by the next run (only when
no other run is writing there). Torch-free: the model's ONNX metadata carries the feature spec, which is checked
(bounded, see cmsdl/features/root_table/spec.py) and held against the model's input width before any file is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cmsdl.errors import CmsdlError, ConfigError, InputFormatError
from cmsdl.features.root_table.read import entries_for_bytes, file_units, open_tree, read_unit
from cmsdl.features.root_table.spec import FeatureSpec, parse_spec
from cmsdl.io import atomic_path, atomic_write
from cmsdl.io.root import is_remote

log = logging.getLogger(__name__)
FORMATS = ("root", "parquet")
SCORE_TREE = "Scores"
STEP_SIZE = "50 MB"
# What cmsdl.io.atomic_path / atomic_write name a score file while it is written: .<name>.<random>.tmp[.root]
TEMPORARY = re.compile(r"^\..+_scores\.(root|parquet)\.[A-Za-z0-9_]+\.tmp(\.root)?$")


@dataclass
class FileScores:
    """Scores of every entry of one input file."""

    path: str
    entries: np.ndarray
    scores: np.ndarray
    selected: np.ndarray


def spec_of(preprocessing: dict[str, Any], input_width: Any = None, model: str = "model") -> FeatureSpec:
    """The feature spec an exported ROOT-table model was trained with (from its metadata), checked against the
    model's input width and its standardisation statistics."""
    source = preprocessing.get("source") if isinstance(preprocessing, dict) else None
    if not isinstance(source, dict) or source.get("kind") != "root_table":
        kind = source.get("kind") if isinstance(source, dict) else None
        raise CmsdlError(f"input: ROOT files need a model trained on ROOT tables; this model's data is {kind!r}")
    try:
        spec = parse_spec(source.get("spec"))
    except ConfigError as err:
        raise ConfigError(f"{model}: the feature spec in its metadata (cmsdl.preprocessing): {err}") from None
    n = len(spec.feature_names)
    widths = {"input width": input_width, "mean": _length(preprocessing.get("mean")),
              "std": _length(preprocessing.get("std"))}
    wrong = {name: width for name, width in widths.items() if width is not None and width != n}
    if wrong:
        name, width = next(iter(wrong.items()))
        raise ConfigError(f"{model}: its feature spec makes {n} features ({', '.join(spec.feature_names[:4])}"
                          f"{', ...' if n > 4 else ''}) but its {name} is {width}; the metadata does not fit the model")
    return spec


def _length(values: Any) -> int | str | None:
    return len(values) if isinstance(values, list) else None if values is None else type(values).__name__


def score_file(predictor: Any, spec: FeatureSpec, path: str, step_size: int | str = STEP_SIZE) -> FileScores:
    """Every entry of `path` (not only those passing the selection) through the model, in entry order; each chunk
    holds at most about `step_size` of branch data and of feature rows."""
    tree = open_tree(path, spec)
    if not isinstance(step_size, int) and tree.num_entries:
        step_size = min(entries_for_bytes(tree, spec.branches(), step_size, int(tree.num_entries)),
                        entries_for_bytes(tree, [], step_size, 0, row_bytes=4 * len(spec.feature_names)))
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


def output_names(paths: list[str], fmt: str) -> dict[str, str]:
    """Score file name per input: `<stem>_scores.<fmt>`, with `-<sha1 of the full path, 6 hex>` after the stem
    when several inputs share a stem (the same names on every run over the same inputs; longer hashes in the
    unlikely case that 6 hex digits collide)."""
    stems = {path: PurePosixPath(path.split("?")[0]).name.removesuffix(".root") for path in paths}
    counts = Counter(stems.values())
    for digits in (6, 12, 40):
        names = {path: f"{stem}-{_path_hash(path)[:digits]}_scores.{fmt}" if counts[stem] > 1 else
                 f"{stem}_scores.{fmt}" for path, stem in stems.items()}
        clash = _first_clash(names)
        if clash is None:
            return names
    raise InputFormatError(f"input: {clash[0]} and {clash[1]} are the same file; give it once")


def _first_clash(names: dict[str, str]) -> tuple[str, str] | None:
    """Two inputs that got the same score file name, if any."""
    seen: dict[str, str] = {}
    for path, name in names.items():
        if name in seen:
            return seen[name], path
        seen[name] = path
    return None


def _path_hash(path: str) -> str:
    full = path.split("?")[0] if is_remote(path) else str(Path(path).resolve())
    return hashlib.sha1(full.encode()).hexdigest()[:6]


def output_path(out_dir: Path, path: str, fmt: str) -> Path:
    """The score file of one input scored on its own."""
    return out_dir / output_names([path], fmt)[path]


@contextlib.contextmanager
def output_directory(out_dir: Path) -> Iterator[list[Path]]:
    """`out_dir`, created and held (a shared lock) while scores are written into it; when no other run holds it,
    the temporary score files that a killed run left there are removed first (they are yielded)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir, os.O_RDONLY)
    except OSError as err:
        raise ConfigError(f"out: cannot write scores into {out_dir} ({err.strerror})") from None
    try:
        removed: list[Path] = []
        with contextlib.suppress(OSError):  # held by another run (or no locks here): leave its files alone
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            removed = remove_stale_temporaries(out_dir)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(fd)


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete cmsdl's temporary score files (TEMPORARY) in `out_dir`; other files are never touched."""
    removed = []
    for path in sorted(out_dir.iterdir()):
        if TEMPORARY.match(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


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


def score_files(predictor: Any, paths: list[str], out_dir: Path, fmt: str = "root", progress: bool = True,
                model: str = "model", names: dict[str, str] | None = None) -> tuple[list[Path], list[str]]:
    """Score every file into `out_dir`; a file that fails is reported (returned) and skipped. `names`: the score
    file of each input (default: output_names of `paths`; a shard of a larger run passes the names of all inputs)."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise CmsdlError(f"format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    shape = predictor.contract.input.shape
    spec = spec_of(predictor.preprocessing, shape[1] if isinstance(shape, list) and len(shape) == 2 else shape, model)
    paths = list(dict.fromkeys(paths))
    names = output_names(paths, fmt) if names is None else names
    written, failed = [], []
    with output_directory(out_dir) as removed:
        if removed:
            log.warning("removed %d temporary file(s) left in %s by an interrupted run", len(removed), out_dir)
        for path in tqdm(paths, desc="score ROOT files", unit="file", disable=not progress):
            try:
                result = score_file(predictor, spec, path)
                written.append(write_scores(result, out_dir / names[path], predictor.contract.class_names))
            except (CmsdlError, InputFormatError, ValueError) as err:
                message = str(err) if str(err).startswith(path) else f"{path}: {err}"
                log.error("skipped %s", message)
                failed.append(message)
    return written, failed
