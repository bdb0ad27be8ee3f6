"""`cmsdl predict model=model.onnx input=...`: batch prediction with an exported model, files → CSV or JSON.

Inputs, by file type: ``.json`` records in the training data's format (e.g. a workflow document), ``.csv``
raw feature rows with a header of feature names, ``.npy`` model-ready tensors, ``.png`` files or folders of
them for image models, ``.root`` files or root:// / https:// URLs for models trained on ROOT tables (scores go
to one file per input, cmsdl/inference/scores.py). Several files or globs may be given. Runs on cmsdl.inference
(no torch). `shard.index=i shard.count=n` scores only every n-th work unit and merges (cmsdl/predict_shards.py).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.inference import InputError, Prediction, Predictor
from cmsdl.inference.scores import output_names, output_path, score_files
from cmsdl.io import atomic_write, loads_json, read_input_text
from cmsdl.io.root import is_remote, match_files
from cmsdl.predict_shards import (Shard, merge_parts, merge_when_complete, parts_directory, run_shard,
                                  shard_from_config)

log = logging.getLogger(__name__)
SUFFIXES = (".json", ".csv", ".npy", ".png", ".root")
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_RECORD_DEPTH = 32
BATCH_ERRORS = (InputError, ArithmeticError, TypeError, KeyError, ValueError, RecursionError)


@dataclass
class Batch:
    """Identifiers and the input of one batch, with the Predictor method that takes it."""

    ids: list[str]
    data: Any
    method: str


def expand_inputs(spec: str | Sequence[str]) -> list[Path | str]:
    """Files named by paths, globs and folders (folders: the PNG files inside, recursively); URLs as they are, remote
    globs through the server's listing. Each file once; a name that matches nothing is one error saying why."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    files: list[Path | str] = []
    for pattern in map(str, patterns):
        try:
            matches = match_files(pattern)
        except InputFormatError as err:
            raise InputFormatError(f"input: {err}") from None
        for match in matches:
            if is_remote(match):
                files.append(match)
            elif Path(match).is_dir():
                files += sorted(Path(match).rglob("*.png"))
            else:
                files.append(Path(match))
    if not files:
        raise InputFormatError(f"input: {', '.join(map(str, patterns)) or 'an empty list'} names no input files "
                               "(folders are searched for .png images)")
    unknown = [f for f in files if isinstance(f, Path) and f.suffix.lower() not in SUFFIXES]
    if unknown:
        raise InputFormatError(f"input: {unknown[0]} is not one of {', '.join(SUFFIXES)}")
    return list(dict.fromkeys(files))


def batches(files: list[Path], size: int) -> Iterator[Batch]:
    """Batches of at most `size` items, file by file (PNG files are grouped together)."""
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    for start in range(0, len(pngs), size):
        chunk = pngs[start:start + size]
        yield Batch([str(p) for p in chunk], chunk, "predict_images")
    for path in (f for f in files if f.suffix.lower() != ".png"):
        ids, data, method = read_table(path)
        for start in range(0, len(ids), size):
            chunk = data[start:start + size]
            yield Batch(ids[start:start + size], np.array(chunk) if isinstance(chunk, np.ndarray) else chunk, method)


def read_table(path: Path) -> tuple[list[str], Any, str]:
    """Row identifiers, rows, and the Predictor method for a .json, .csv or .npy file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = read_npy(path)
        return [f"{path.name}:{i}" for i in range(len(array))], array, "run"
    if suffix == ".csv":
        rows = read_csv_rows(path)
        return [f"{path.name}:{i}" for i in range(len(rows))], rows, "predict_rows"
    records = read_json_records(path)
    return [str(r.get("name", i)) if isinstance(r, dict) else str(i) for i, r in enumerate(records)], records, \
        "predict_records"


def read_npy(path: Path) -> np.ndarray:
    """A .npy file mapped, not read: a header that declares more data than the file holds is one error (no pickles)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputFormatError(f"{path}: not a .npy array ({' '.join(str(err).split())[:200]})") from None
    if array.ndim == 0:
        raise InputFormatError(f"{path}: holds a single number; expected an array with one row per item")
    return array


def read_csv_rows(path: Path) -> list[dict[str, float]]:
    """Feature rows of a CSV file with a header (a UTF-8 BOM is accepted; an `id` column is ignored); a value that
    is not a number within float32's range is one error naming the row and the field."""
    rows = []
    reader = csv.DictReader(io.StringIO(read_input_text(path, "CSV input"), newline=""))
    try:
        for i, row in enumerate(reader):
            where = f"{path}: row {i} (line {reader.line_num})"
            if None in row:
                raise InputFormatError(f"{where}: {len(row[None])} more value(s) than the header's "
                                       f"{len(reader.fieldnames or [])} columns")
            rows.append({k: _csv_number(v, f"{where}, field {k!r}") for k, v in row.items() if k != "id"})
    except csv.Error as err:
        raise InputFormatError(f"{path}: line {reader.line_num}: not readable as CSV ({err})") from None
    return rows


def _csv_number(text: str | None, where: str) -> float:
    if text is None:
        raise InputFormatError(f"{where}: no value (the row has fewer values than the header)")
    try:
        value = float(text)
    except ValueError:
        raise InputFormatError(f"{where}: {text[:40]!r} is not a number") from None
    return _in_range(value, where, text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)")


def _in_range(value: int | float, where: str, shown: str | None = None) -> float:
    """`value` as a float if it is finite and fits float32 (the model's input type); else one error."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        if shown is None:
            shown = f"{number:.6g}" if math.isfinite(number) or isinstance(value, float) else \
                f"an integer of {len(str(abs(value)))} digits"
        raise InputFormatError(f"{where}: {shown} is out of range (expected a finite number of magnitude at most "
                               f"{FLOAT32_MAX:.3g})")
    return number


def read_json_records(path: Path) -> list[Any]:
    """The records of a JSON input (a list, or an object with 'workflows' or 'records'; a UTF-8 BOM is accepted);
    a record nested deeper than MAX_RECORD_DEPTH or holding a number out of float32's range is one error naming
    the record and the field."""
    try:
        doc = loads_json(read_input_text(path, "JSON input"))
    except InputFormatError:
        raise
    except ValueError as err:
        raise InputFormatError(f"{path}: not valid JSON ({' '.join(str(err).split())[:200]})") from None
    records = doc.get("workflows", doc.get("records")) if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise InputFormatError(f"{path}: expected a list of records (or an object with 'workflows' or 'records')")
    for i, record in enumerate(records):
        _check_record(record, f"{path}: record {i}" + (f" ({str(record['name'])[:60]!r})" if isinstance(record, dict)
                                                        and "name" in record else ""))
    return records


def _check_record(record: Any, where: str) -> None:
    """Every number in `record` finite and within float32's range, nesting at most MAX_RECORD_DEPTH levels."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(record, ())]
    while stack:
        value, fields = stack.pop()
        field = ".".join(fields)[:200] or "(the record itself)"
        if len(fields) > MAX_RECORD_DEPTH:
            raise InputFormatError(f"{where}, field {field}: nested deeper than {MAX_RECORD_DEPTH} levels")
        if isinstance(value, dict):
            stack += [(v, (*fields, str(k))) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, (*fields, str(k))) for k, v in enumerate(value)]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _in_range(value, f"{where}, field {field}")


def predict_files(predictor: Predictor, files: list[Path], batch_size: int) -> tuple[list[str], Prediction]:
    """Predictions for every item of every file, in input order."""
    ids: list[str] = []
    outputs = []
    for batch in tqdm(list(batches(files, batch_size)), desc="predict", unit="batch"):
        ids += batch.ids
        outputs.append(predict_batch(predictor, batch).outputs)
    if not outputs:
        raise InputFormatError("input: no records, rows or images found")
    return ids, Prediction(np.concatenate(outputs), predictor.contract.class_names, predictor.contract.task)


def predict_batch(predictor: Predictor, batch: Batch) -> Prediction:
    """The batch through the model; if it fails, one error naming the first item that fails on its own."""
    try:
        return getattr(predictor, batch.method)(batch.data)
    except BATCH_ERRORS as err:
        failure = err
    if batch.method in ("predict_records", "predict_rows"):
        for item_id, item in zip(batch.ids, batch.data):
            try:
                getattr(predictor, batch.method)([item])
            except BATCH_ERRORS as err:
                raise InputFormatError(f"{item_id}: {_reason(err)}") from None
    raise InputFormatError(f"{batch.ids[0]}: {_reason(failure)}") from None


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split())[:300]
    return text if isinstance(err, InputError) else f"{type(err).__name__}: {text}"


def write_predictions(out: Path, ids: list[str], prediction: Prediction) -> None:
    """CSV (id, label, one column per class or target) or JSON (a list of objects), written atomically."""
    names = prediction.class_names
    prefix = "p_" if prediction.task == "classification" else ""
    labels = prediction.labels or [""] * len(ids)
    rows = [{"id": i, "label": label, **{f"{prefix}{n}": float(v) for n, v in zip(names, values)}}
            for i, label, values in zip(ids, labels, prediction.outputs)]
    with atomic_write(out, newline="") as handle:
        if out.suffix.lower() == ".json":
            json.dump(rows, handle, indent=1)
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def is_root_input(item: Path | str) -> bool:
    return isinstance(item, str) or item.suffix.lower() == ".root"


def predict_root(predictor: Predictor, files: list[Path | str], out: Path, fmt: str, model: str = "model",
                 shard: Shard = Shard()) -> Path:
    """Scores of every entry of every ROOT input (this shard's inputs: i, i + n, ...), one file per input in `out`,
    named as a run over all inputs names them; failed files are listed."""
    if out.suffix.lower() in (".csv", ".json") or (out.exists() and not out.is_dir()):
        raise ConfigError(f"out: ROOT inputs are scored into a directory (one file per input), got {out}")
    every = [str(f) for f in files]
    names = output_names(every, fmt)
    mine = shard.units_of(every)
    written, failed = score_files(predictor, mine, out, fmt, model=str(model), names=names)
    print(f"wrote {len(written)} score files to {out}" + (f" (shard {shard.index} of {shard.count})"
                                                          if shard.count > 1 else "")
          + (f"; {len(failed)} input file(s) failed:" if failed else ""))
    for message in failed:
        print(f"  {message}")
    for path in mine:
        if names[path] != output_path(out, path, fmt).name:
            print(f"  {path} → {out / names[path]} (inputs share the file name)")
    if failed:
        raise SystemExit(1)
    return out


def predict(cfg: DictConfig) -> Path:
    out = Path(cfg.out)
    shard = shard_from_config(cfg.get("shard"))
    if cfg.get("merge_only"):
        return merge_only(out)
    try:
        predictor = Predictor(cfg.onnx, threads=cfg.threads, providers=cfg.providers)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    spec = OmegaConf.to_container(cfg.input) if isinstance(cfg.input, ListConfig) else cfg.input
    files = expand_inputs(spec)
    if files and all(map(is_root_input, files)):
        return predict_root(predictor, files, out, cfg.get("format", "root"), model=str(cfg.onnx), shard=shard)
    if any(map(is_root_input, files)):
        raise ConfigError("input: mix of ROOT files and other inputs; score ROOT files in a run of their own")
    if out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"out: {out} should end in .csv or .json")
    if shard.count > 1:
        run_shard(predictor, str(cfg.onnx), files, out, cfg.batch_size, shard)
        merge_when_complete(out)
        return out
    ids, prediction = predict_files(predictor, files, cfg.batch_size)
    write_predictions(out, ids, prediction)
    print(f"wrote {len(ids)} predictions to {out}")
    return out


def merge_only(out: Path) -> Path:
    """`merge_only=true`: the parts of a sharded run merged into `out`; ROOT score directories need no merge."""
    if out.suffix.lower() not in (".csv", ".json"):
        print(f"nothing to merge: ROOT inputs are scored one file per input into {out} by the shards themselves")
        return out
    rows = merge_parts(out)
    print(f"merged {rows} predictions from {parts_directory(out)} into {out}")
    return out
