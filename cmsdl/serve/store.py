"""ModelStore: the directory of ONNX models a service serves; uploads are validated, then swapped in atomically.

A model's name is its file name without ``.onnx``. An upload is loaded and checked first (valid ONNX, a cmsdl
contract that agrees with the graph, one test inference), then written to a hidden temporary file (mode 0644:
the service user may differ from the uploader) and renamed over the old one (cmsdl.io.staged_files), so a bad
upload never replaces a good model. At start-up a bad file is skipped and listed, never fatal. Error texts name files relative to the
model directory, never its absolute path. Imports no torch.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from cmsdl.inference import Predictor
from cmsdl.io import staged_files

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILE_MODE = 0o644


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
                predictor = Predictor(path, threads=self.threads, label=path.name)
            except Exception as err:  # any broken file is skipped: the service serves the others
                message = str(err) if isinstance(err, ValueError) else f"{path.name}: cannot be loaded ({err!r})"
                self.errors[path.name] = self.relative(message)
                log.warning("skipping %s: %s", path, err)
                continue
            with self._lock:
                self._models[path.stem] = predictor
        log.info("serving %d model(s) from %s", len(self._models), self.directory)

    def relative(self, message: str) -> str:
        """`message` with the model directory's absolute path taken out (file names stay)."""
        for folder in {str(self.directory.resolve()), str(self.directory.absolute()), str(self.directory)}:
            message = message.replace(folder + os.sep, "")
        return message

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

    def delete(self, name: str) -> None:
        with self._lock:
            if self._models.pop(check_name(name), None) is None:
                raise UnknownModelError(f"unknown model {name!r}")
            (self.directory / f"{name}.onnx").unlink(missing_ok=True)
