"""ModelStore: the directory of ONNX models a service serves; uploads are validated, then swapped in atomically.

The directory holds ``<name>.onnx`` files (version 1) and Triton model repository folders, served as they are
(config.pbtxt may be left out, as for Triton):

    models/mlp.onnx                     model "mlp", version 1
    models/top/config.pbtxt             model "top" (name, platform onnxruntime_onnx, inputs, outputs, ...)
    models/top/1/model.onnx
    models/top/3/model.onnx             the latest (highest integer) version, 3, is served

A broken config.pbtxt (not text format, another name or platform, inputs the model does not have) is listed by
its path and that model skipped. Repository models are changed in the repository, not by upload.
A flat model's name is its file name without ``.onnx``. An upload is loaded and checked first (valid ONNX, a cmsdl
contract that agrees with the graph, one test inference), then written to a hidden temporary file (mode 0644:
the service user may differ from the uploader) and renamed over the old one (cmsdl.io.staged_files), so a bad
upload never replaces a good model. At start-up a bad file is skipped and listed, never fatal. Error texts name
files relative to the model directory, never its absolute path. Imports no torch.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from typing import Any

from cmsdl.export.triton import latest_version, read_triton_config
from cmsdl.inference import Predictor
from cmsdl.io import staged_files

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILE_MODE = 0o644
CONFIG = "config.pbtxt"
REPOSITORY_MODEL = "model.onnx"
ONNX_PLATFORMS = {"platform": "onnxruntime_onnx", "backend": "onnxruntime"}


class ModelNameError(ValueError):
    """A model name that could escape the model directory or is not a plain identifier."""


class RepositoryModelError(ValueError):
    """An upload or deletion of a model that comes from a Triton repository folder."""


class UnknownModelError(KeyError):
    """No model of that name is served."""

    def __str__(self) -> str:
        return str(self.args[0])


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or ".." in name:
        raise ModelNameError(f"model name {name!r}: use 1-64 letters, digits, '_', '-', '.', starting with a letter "
                             "or digit (no paths)")
    return name


class ModelStore:
    """Thread-safe map of model name → Predictor, backed by `directory`/*.onnx."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.threads = threads
        self._models: dict[str, Predictor] = {}
        self._versions: dict[str, str] = {}  # repository models only; flat files are version "1"
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}

    def load_all(self) -> None:
        """Load every valid model of the directory; invalid files are logged and listed in `errors`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.onnx")):
            self._load(path.stem, path, path.name)
        for folder in sorted(p for p in self.directory.iterdir() if is_repository_model(p)):
            self._load_repository_model(folder)
        log.info("serving %d model(s) from %s", len(self._models), self.directory)

    def _load(self, name: str, path: Path, where: str, config: dict[str, Any] | None = None) -> Predictor | None:
        """Load `path` as model `name`, or list the error under `where` and return None."""
        try:
            predictor = Predictor(path, threads=self.threads, label=where)
            if config is not None:
                check_config_tensors(config, predictor, where.rsplit("/", 2)[0] + "/" + CONFIG)
        except Exception as err:  # any broken file is skipped: the service serves the others
            message = str(err) if isinstance(err, ValueError) else f"{where}: cannot be loaded ({err!r})"
            self.errors[where] = self.relative(message)
            log.warning("skipping %s: %s", path, err)
            return None
        with self._lock:
            self._models[name] = predictor
        return predictor

    def _load_repository_model(self, folder: Path) -> None:
        """A Triton repository folder: config.pbtxt and the highest integer version holding a model.onnx."""
        name, config_path = folder.name, f"{folder.name}/{CONFIG}"
        try:
            check_name(name)
            if name in self._models:
                raise ValueError(f"{name}: both {name}.onnx and the repository folder {name}/ exist; serving "
                                 f"{name}.onnx")
            config = read_repository_config(folder)
        except (ValueError, OSError) as err:
            self.errors[config_path] = self.relative(str(err))
            log.warning("skipping %s: %s", folder, err)
            return
        latest = latest_version(folder, REPOSITORY_MODEL)
        if latest is None:
            self.errors[f"{name}/"] = f"{name}/: no <version>/{REPOSITORY_MODEL} (e.g. {name}/1/{REPOSITORY_MODEL})"
            return
        version = str(latest[0])
        if self._load(name, latest[1], f"{name}/{version}/{REPOSITORY_MODEL}", config):
            self._versions[name] = version

    def relative(self, message: str) -> str:
        """`message` with the model directory's absolute path taken out (file names stay)."""
        for folder in {str(self.directory.resolve()), str(self.directory.absolute()), str(self.directory)}:
            message = message.replace(folder + os.sep, "")
        return message

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def version(self, name: str) -> str:
        """The served version of model `name`: the repository's latest, or "1" for a flat .onnx file."""
        return self._versions.get(name, "1")

    def has(self, name: str) -> bool:
        return name in self._models

    def find(self, name: str) -> Predictor | None:
        """The model called `name`, or None (no error: for the fast path, which hands unknown names on)."""
        return self._models.get(name)

    def get(self, name: str) -> Predictor:
        with self._lock:
            predictor = self._models.get(check_name(name))
        if predictor is None:
            raise UnknownModelError(f"unknown model {name!r}; served: {', '.join(self.names()) or 'none'}")
        return predictor

    def put(self, name: str, content: bytes) -> tuple[Predictor, bool]:
        """Validate `content` as a cmsdl ONNX model and install it as `name`; returns (predictor, replaced)."""
        self._check_not_in_repository(check_name(name))
        try:
            predictor = Predictor(content, threads=self.threads, label=f"uploaded model {name!r}")
        except ValueError as err:
            raise ValueError(self.relative(str(err))) from None
        with staged_files(FILE_MODE) as staging:
            staging.write(self.directory / f"{name}.onnx", content)
            with self._lock:
                replaced = name in self._models
                staging.commit()
                self._models[name] = predictor
                self.errors.pop(f"{name}.onnx", None)
        return predictor, replaced

    def _check_not_in_repository(self, name: str) -> None:
        if name in self._versions:
            raise RepositoryModelError(f"model {name!r} is served from the repository folder {name}/"
                                       f"{self._versions[name]}/{REPOSITORY_MODEL}; change it there")

    def delete(self, name: str) -> None:
        self._check_not_in_repository(check_name(name))
        with self._lock:
            if self._models.pop(check_name(name), None) is None:
                raise UnknownModelError(f"unknown model {name!r}")
            (self.directory / f"{name}.onnx").unlink(missing_ok=True)


def is_repository_model(folder: Path) -> bool:
    """A folder with a config.pbtxt or an integer version folder (Triton's layout); others are not models."""
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    return (folder / CONFIG).exists() or any(p.name.isdigit() and p.is_dir() for p in folder.iterdir())


def read_repository_config(folder: Path) -> dict[str, Any]:
    """A repository folder's config.pbtxt (read by cmsdl.export.triton), checked for what serving needs: the
    folder's name and an ONNX Runtime platform. No config.pbtxt: as for Triton, the model file says it all."""
    path = f"{folder.name}/{CONFIG}"
    if not (folder / CONFIG).exists():
        return {}
    config = read_triton_config(folder / CONFIG)
    if config.get("name", folder.name) != folder.name:
        raise ValueError(f"{path}: name {config['name']!r}, expected the folder's name {folder.name!r}")
    for key, expected in ONNX_PLATFORMS.items():
        if key in config and config[key] != expected:
            raise ValueError(f"{path}: {key} {config[key]!r}, expected {expected!r} (cmsdl serves ONNX models)")
    return config


def check_config_tensors(config: dict[str, Any], predictor: Predictor, path: str) -> None:
    """The inputs and outputs config.pbtxt names are the model's."""
    contract = predictor.contract
    for role, specs in (("input", contract.inputs), ("output", contract.outputs)):
        for i, tensor in enumerate(config.get(role, [])):
            name = tensor.get("name") if isinstance(tensor, dict) else None
            if name not in [spec.name for spec in specs]:
                raise ValueError(f"{path}: {role}[{i}] name {name!r}, but the model's {role}s are "
                                 f"{[spec.name for spec in specs]}")
