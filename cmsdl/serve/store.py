"""ModelStore: the directory of ONNX models a service serves; uploads are validated, then swapped in atomically.

A model's name is its file name without ``.onnx``. A new or replaced model is written to a hidden temporary file,
loaded and checked (valid ONNX with a cmsdl contract), and only then renamed over the old one, so a bad upload
never replaces a good model. Imports no torch.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from cmsdl.inference import Predictor

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ModelNameError(ValueError):
    """A model name that could escape the model directory or is not a plain identifier."""


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
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}

    def load_all(self) -> None:
        """Load every valid model of the directory; invalid files are logged and listed in `errors`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.onnx")):
            try:
                predictor = Predictor(path, threads=self.threads)
            except ValueError as err:
                self.errors[path.name] = str(err)
                log.warning("skipping %s: %s", path, err)
                continue
            with self._lock:
                self._models[path.stem] = predictor
        log.info("serving %d model(s) from %s", len(self._models), self.directory)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, name: str) -> Predictor:
        with self._lock:
            predictor = self._models.get(check_name(name))
        if predictor is None:
            raise UnknownModelError(f"unknown model {name!r}; served: {', '.join(self.names()) or 'none'}")
        return predictor

    def put(self, name: str, content: bytes) -> tuple[Predictor, bool]:
        """Validate `content` as a cmsdl ONNX model and install it as `name`; returns (predictor, replaced)."""
        check_name(name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".upload", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            predictor = Predictor(tmp, threads=self.threads, label=f"uploaded model {name!r}")
            with self._lock:
                replaced = name in self._models
                os.replace(tmp, self.directory / f"{name}.onnx")
                self._models[name] = predictor
        finally:
            Path(tmp).unlink(missing_ok=True)
        return predictor, replaced

    def delete(self, name: str) -> None:
        with self._lock:
            if self._models.pop(check_name(name), None) is None:
                raise UnknownModelError(f"unknown model {name!r}")
            (self.directory / f"{name}.onnx").unlink(missing_ok=True)
