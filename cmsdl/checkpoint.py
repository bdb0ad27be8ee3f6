"""Checkpoints written by `cmsdl train`: find one (a file or a run directory), load it without running code, check
it, and restore the datamodule and model it stores (for eval and export; training resumes through `verified`), or
the model and its parity samples alone (for export, without the training data).

Loading is `torch.load(weights_only=True)`: tensors, plain containers and numbers, plus the few types on
SAFE_GLOBALS. A pickle that asks for anything else (a `__reduce__` that calls a function) is refused before any of
it runs. Imports torch and the config helpers, never a command module.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from cmsdl.callbacks import CHECKPOINT_KEY
from cmsdl.config import instantiate_logged
from cmsdl.errors import InputFormatError
from cmsdl.runs import LAST_CKPT

_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / numpy 1
WRITTEN_BY = "a .ckpt written by `cmsdl train`"

# Beyond torch's own weights-only set (tensors, dicts, lists, tuples, OrderedDict, numbers, strings): types that a
# datamodule's state or a callback's state may legitimately hold. Each only rebuilds data, none calls code.
SAFE_GLOBALS: list[Any] = [
    np.dtype,
    np.ndarray,
    _multiarray._reconstruct,
    _multiarray.scalar,
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    *(type(np.dtype(name)) for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                        "uint64", "float16", "float32", "float64")),
]


class CheckpointError(InputFormatError):
    """A checkpoint is missing, damaged, refused as unsafe, or was not written by `cmsdl train`."""


@contextmanager
def safe_types() -> Iterator[None]:
    """Let weights-only loads (ours and Lightning's `weights_only=True`) accept SAFE_GLOBALS in this block."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def read_checkpoint(path: Path) -> Any:
    """The unpickled contents of a checkpoint file, loaded weights-only; one clear error for anything else."""
    if not path.is_file():
        raise CheckpointError(f"ckpt: {path} does not exist (expected {WRITTEN_BY}, or its run directory)")
    check_archive(path)
    try:
        with safe_types():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):  # the archive is intact (CRCs checked): it asks for more
            raise CheckpointError(f"ckpt: {path} was refused: loading it would call {unsafe_globals(path)}, which "
                                  f"{WRITTEN_BY} never asks for (only tensors and plain values are loaded)") from None
        raise damaged(path, err) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged archives
        raise damaged(path, err) from None


def check_archive(path: Path) -> None:
    """torch.save writes a zip archive: a truncated or zeroed file has lost its directory, a damaged one its CRCs."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"ckpt: {path} is damaged or not a PyTorch checkpoint (expected {WRITTEN_BY}, a zip "
                              "archive; this one is truncated, zeroed or of another format)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise damaged(path, err) from None
    if bad is not None:
        raise CheckpointError(f"ckpt: {path} is damaged: its entry {bad} fails its CRC check (expected {WRITTEN_BY})")


def unsafe_globals(path: Path) -> str:
    """The globals a checkpoint needs beyond the allow-list, for the refusal message (listed without running them)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
    except Exception:  # noqa: BLE001  the list is only a hint for the message
        names = []
    return ", ".join(names) if names else "code outside the allow-list"


def damaged(path: Path, err: Exception) -> CheckpointError:
    first_sentence = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:160]
    return CheckpointError(f"ckpt: {path} is damaged (expected {WRITTEN_BY}; reading it failed with "
                           f"{type(err).__name__}: {first_sentence})")


# Modules that moved (issue 17): `_target_`s in the configs of checkpoints written before are read at the new place.
RENAMED_MODULES: dict[str, str] = {
    "cmsdl.data.workflow_features": "cmsdl.features.workflows.source",
    "cmsdl.data.workflows": "cmsdl.features.workflows.records",
    "cmsdl.data.transfer_features": "cmsdl.features.transfers.source",
    "cmsdl.data.transfers": "cmsdl.features.transfers.records",
    "cmsdl.data.popularity_features": "cmsdl.features.popularity.source",
    "cmsdl.data.popularity": "cmsdl.features.popularity.records",
    "cmsdl.data.splits": "cmsdl.data.base",
}


def renamed_targets(config: Any) -> Any:
    """The config with every `_target_` of a moved module pointing at its new module (in place; also returned)."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if isinstance(target, str):
            module, _, name = target.rpartition(".")
            config["_target_"] = f"{RENAMED_MODULES.get(module, module)}.{name}" if module else target
        for value in config.values():
            renamed_targets(value)
    elif isinstance(config, list):
        for value in config:
            renamed_targets(value)
    return config


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A cmsdl checkpoint as a dict, from its file or its run directory; anything else raises CheckpointError."""
    path = resolve_checkpoint(path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(f"ckpt: {path} was not written by `cmsdl train` (no '{CHECKPOINT_KEY}' entry)")
    renamed_targets(checkpoint[CHECKPOINT_KEY].get("config"))
    return checkpoint


def verified(path: str | Path | None) -> str | None:
    """`path` (None passes) once it has loaded safely: Lightning then resumes only from a sound cmsdl checkpoint."""
    if path is None:
        return None
    load_checkpoint(Path(path))
    return str(path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the best checkpoint of a run directory (metrics.json, else last.ckpt)."""
    path = Path(path)
    if not path.is_dir():
        return path
    chosen, how = best_in_run(path)
    print(f"ckpt: {path} is a run directory: using {how} {chosen}")
    return chosen


def best_in_run(run_dir: Path) -> tuple[Path, str]:
    """The checkpoint to use from a run directory and how it was chosen."""
    best = recorded_best(run_dir)
    if best is not None:
        for candidate in (best, run_dir / "checkpoints" / best.name):  # the run directory may have moved
            if candidate.is_file():
                return candidate, "its best checkpoint (metrics.json)"
    if (run_dir / LAST_CKPT).is_file():
        return run_dir / LAST_CKPT, "its last checkpoint"
    raise CheckpointError(f"ckpt: {run_dir} is a directory but not a run of `cmsdl train` (expected metrics.json "
                          f"with best_checkpoint, or {LAST_CKPT})")


def recorded_best(run_dir: Path) -> Path | None:
    """`best_checkpoint` of a run's metrics.json, if it names one."""
    try:
        best = json.loads((run_dir / "metrics.json").read_text()).get("best_checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(best) if isinstance(best, str) and best else None


@contextmanager
def working_directory(path: str | None) -> Iterator[None]:
    """Run a block in `path` (if it exists): relative data paths of a run are relative to where it ran."""
    previous = os.getcwd()
    if path and Path(path).is_dir():
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def restore(checkpoint: dict[str, Any], data_overrides: DictConfig | None = None) -> tuple[Any, pl.LightningModule]:
    """The datamodule (with its fitted preprocessing) and the trained model stored in a checkpoint."""
    context = checkpoint[CHECKPOINT_KEY]
    run_cfg = OmegaConf.create(context["config"])
    data_cfg = OmegaConf.merge(run_cfg.data, data_overrides or {})
    datamodule = instantiate_logged(data_cfg, "data")
    datamodule.load_state_dict(context["preprocessing"])
    with working_directory(run_cfg.get("paths", {}).get("root_dir")):
        datamodule.setup()
    return datamodule, restore_model(checkpoint)


def checkpoint_task(checkpoint: dict[str, Any]) -> str:
    """The task the run's DataModule declared; checkpoints written before it was stored carry it in the tabular
    preprocessing, and every other kind of data was classification."""
    context = checkpoint[CHECKPOINT_KEY]
    return str(context.get("task") or context["preprocessing"].get("task") or "classification")


def restore_model(checkpoint: dict[str, Any]) -> pl.LightningModule:
    """The trained model stored in a checkpoint, in eval mode (its config is complete: no data is read)."""
    model = instantiate_logged(OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"]).model, "model")
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def parity_inputs(checkpoint: dict[str, Any], path: str | Path) -> torch.Tensor | None:
    """The model-ready inputs that `cmsdl train` stored for the export's parity check; None in a checkpoint written
    before they were stored."""
    context = checkpoint[CHECKPOINT_KEY]
    samples = context.get("parity_inputs") if isinstance(context, dict) else None
    if samples is None:
        return None
    if not isinstance(samples, torch.Tensor):
        found = type(samples).__name__
    elif samples.ndim < 2 or len(samples) == 0 or samples.dtype not in (torch.uint8, torch.float32):
        found = f"a {samples.dtype} tensor of shape {list(samples.shape)}"
    else:
        return samples
    raise CheckpointError(f"ckpt: {path}: '{CHECKPOINT_KEY}.parity_inputs' is {found}, expected a uint8 or float32 "
                          "tensor [samples, ...] with at least one sample")
