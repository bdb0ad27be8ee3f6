"""`cmsdl predict model=model.onnx input=...`: batch prediction with an exported model, files → CSV or JSON.

Inputs, by file type: ``.json`` records in the training data's format (e.g. a workflow document), ``.csv``
raw feature rows with a header of feature names, ``.npy`` model-ready tensors, ``.png`` files or folders of
them for image models, ``.root`` files or root:// / https:// URLs for models trained on ROOT tables (scores go
to one file per input, cmsdl/ntuple/scores.py). Several files or globs may be given. Runs on cmsdl.inference
(no torch).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from cmsdl.config import hydra_app
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.inference import InputError, Prediction, Predictor, load_npy
from cmsdl.io import atomic_write
from cmsdl.ntuple.remote import expand_remote, is_remote
from cmsdl.ntuple.scores import score_files

log = logging.getLogger(__name__)
SUFFIXES = (".json", ".csv", ".npy", ".png", ".root")


@dataclass
class Batch:
    """Identifiers and the input of one batch, with the Predictor method that takes it."""

    ids: list[str]
    data: Any
    method: str


def expand_inputs(spec: str | Sequence[str]) -> list[Path | str]:
    """Files named by paths, globs and folders (folders: the PNG files inside, recursively); URLs as they are."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    files: list[Path | str] = []
    for pattern in patterns:
        if is_remote(str(pattern)):
            files += expand_remote(str(pattern))
            continue
        matches = sorted(glob.glob(str(pattern))) or [str(pattern)]
        for match in map(Path, matches):
            if match.is_dir():
                files += sorted(match.rglob("*.png"))
            elif match.is_file():
                files.append(match)
            else:
                raise InputFormatError(f"input: {match} does not exist")
    unknown = [f for f in files if isinstance(f, Path) and f.suffix.lower() not in SUFFIXES]
    if unknown:
        raise InputFormatError(f"input: {unknown[0]} is not one of {', '.join(SUFFIXES)}")
    return files


def batches(files: list[Path], size: int) -> Iterator[Batch]:
    """Batches of at most `size` items, file by file (PNG files are grouped together)."""
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    for start in range(0, len(pngs), size):
        chunk = pngs[start:start + size]
        yield Batch([str(p) for p in chunk], chunk, "predict_images")
    for path in (f for f in files if f.suffix.lower() != ".png"):
        ids, data, method = read_table(path)
        for start in range(0, len(ids), size):
            yield Batch(ids[start:start + size], data[start:start + size], method)


def read_table(path: Path) -> tuple[list[str], Any, str]:
    """Row identifiers, rows, and the Predictor method for a .json, .csv or .npy file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = load_npy(path.read_bytes())
            return [f"{path.name}:{i}" for i in range(len(array))], array, "run"
        if suffix == ".csv":
            with path.open(newline="") as handle:
                rows = [{k: float(v) for k, v in row.items() if k != "id"} for row in csv.DictReader(handle)]
            return [f"{path.name}:{i}" for i in range(len(rows))], rows, "predict_rows"
        doc = json.loads(path.read_text())
    except (ValueError, InputError) as err:
        raise InputFormatError(f"{path}: {err}") from None
    records = doc.get("workflows", doc.get("records")) if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise InputFormatError(f"{path}: expected a list of records (or an object with 'workflows' or 'records')")
    return [str(r.get("name", i)) if isinstance(r, dict) else str(i) for i, r in enumerate(records)], records, \
        "predict_records"


def predict_files(predictor: Predictor, files: list[Path], batch_size: int) -> tuple[list[str], Prediction]:
    """Predictions for every item of every file, in input order."""
    ids: list[str] = []
    outputs = []
    for batch in tqdm(list(batches(files, batch_size)), desc="predict", unit="batch"):
        try:
            result = getattr(predictor, batch.method)(batch.data)
        except InputError as err:
            raise InputFormatError(f"{batch.ids[0]}: {err}") from None
        ids += batch.ids
        outputs.append(result.outputs)
    if not outputs:
        raise InputFormatError("input: no records, rows or images found")
    return ids, Prediction(np.concatenate(outputs), predictor.contract.class_names, predictor.contract.task)


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


def predict_root(predictor: Predictor, files: list[Path | str], out: Path, fmt: str) -> Path:
    """Scores of every entry of every ROOT input, one file per input in `out`; failed files are listed."""
    if out.suffix.lower() in (".csv", ".json"):
        raise ConfigError(f"out: ROOT inputs are scored into a directory (one file per input), got {out}")
    written, failed = score_files(predictor, [str(f) for f in files], out, fmt)
    print(f"wrote {len(written)} score files to {out}" + (f"; {len(failed)} input file(s) failed:" if failed else ""))
    for message in failed:
        print(f"  {message}")
    if failed:
        raise SystemExit(1)
    return out


def predict(cfg: DictConfig) -> Path:
    out = Path(cfg.out)
    try:
        predictor = Predictor(cfg.onnx, threads=cfg.threads, providers=cfg.providers)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    spec = OmegaConf.to_container(cfg.input) if isinstance(cfg.input, ListConfig) else cfg.input
    files = expand_inputs(spec)
    if files and all(map(is_root_input, files)):
        return predict_root(predictor, files, out, cfg.get("format", "root"))
    if any(map(is_root_input, files)):
        raise ConfigError("input: mix of ROOT files and other inputs; score ROOT files in a run of their own")
    if out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"out: {out} should end in .csv or .json")
    ids, prediction = predict_files(predictor, files, cfg.batch_size)
    write_predictions(out, ids, prediction)
    print(f"wrote {len(ids)} predictions to {out}")
    return out


@hydra_app("predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)
