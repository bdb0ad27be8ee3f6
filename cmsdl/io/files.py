"""Small file helpers shared by every command: atomic writes, so that no half-written output is left behind, and
the one reader of input files (text with or without a UTF-8 BOM; JSON that cannot crash its reader)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cmsdl.errors import InputFormatError


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", file_mode: int | None = None,
                 **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    with staged_files(file_mode) as staging:
        with staging.open(path, mode, **open_kwargs) as handle:
            yield handle
        staging.commit()


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", file_mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` for writers that want a file name (uproot); renamed over `path` only if the
    block succeeds."""
    with staged_files(file_mode) as staging:
        yield staging.path(path, suffix)
        staging.commit()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, file_mode: int | None = None) -> None:
    """Write bytes under a temporary name beside `path` and rename: a killed run never leaves a half-written file."""
    write_files_atomic({path: data}, file_mode)


def write_files_atomic(files: Mapping[str | os.PathLike, bytes], file_mode: int | None = None) -> None:
    """Write every file under a temporary name beside it, then rename them all, in order: if any write fails, no
    target is touched and no temporary file is left."""
    with staged_files(file_mode) as staging:
        for path, data in files.items():
            staging.write(path, data)
        staging.commit()


class StagedFiles:
    """Files written under temporary names beside their targets (`.<name>.<random>.tmp[suffix]`), given their mode
    (`file_mode`, else what the umask allows) and renamed over the targets together by `commit()`, in the order
    they were staged."""

    def __init__(self, file_mode: int | None = None) -> None:
        self.file_mode = file_mode
        self._staged: list[tuple[Path, Path]] = []  # (temporary, target)

    def open(self, path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> IO:
        """A new temporary file for `path`, open for writing."""
        return os.fdopen(self._stage(Path(path)), mode, **open_kwargs)

    def path(self, path: str | os.PathLike, suffix: str = "") -> Path:
        """A new (empty) temporary file for `path`, by name."""
        os.close(self._stage(Path(path), suffix))
        return self._staged[-1][0]

    def write(self, path: str | os.PathLike, data: bytes) -> None:
        with self.open(path) as handle:
            handle.write(data)

    def commit(self) -> None:
        """Set every staged file's mode, then rename each over its target."""
        mode = 0o666 & ~_umask() if self.file_mode is None else self.file_mode
        for tmp, _ in self._staged:
            os.chmod(tmp, mode)
        while self._staged:
            tmp, target = self._staged[0]
            os.replace(tmp, target)
            self._staged.pop(0)

    def discard(self) -> None:
        """Remove the staged files not renamed yet."""
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()

    def _stage(self, target: Path, suffix: str = "") -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
        self._staged.append((Path(tmp), target))
        return fd


@contextmanager
def staged_files(file_mode: int | None = None) -> Iterator[StagedFiles]:
    """A StagedFiles whose files not committed by the end of the block are removed (on success or failure)."""
    staging = StagedFiles(file_mode)
    try:
        yield staging
    finally:
        staging.discard()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON atomically and return the path."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=indent, sort_keys=False)
        handle.write("\n")
    return Path(path)


def write_config(path: str | os.PathLike, cfg: Any) -> Path:
    """A run's resolved config as YAML beside its outputs, written atomically."""
    from omegaconf import OmegaConf

    with atomic_write(path) as handle:
        handle.write(OmegaConf.to_yaml(cfg, resolve=True))
    return Path(path)


def read_input_text(path: str | os.PathLike, what: str) -> str:
    """The text of a UTF-8 input file, without the byte-order mark that spreadsheet exports put first; a missing
    or unreadable one raises one InputFormatError naming it and `what`."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputFormatError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFormatError(f"{path}: cannot read {what} ({err})") from None


MAX_INT_DIGITS = 300  # beyond float64; in a document with an integer too long for Python, longer ones become ±inf


def loads_json(text: str) -> Any:
    """json.loads for input files; every way the text can fail raises ValueError with a one-line reason.

    Nesting deeper than Python's recursion limit is a ValueError (not a RecursionError); integers longer than
    Python's limit for text conversion are read as ±inf (instead of failing the whole document), so that the
    caller's range check can name the field. A json.JSONDecodeError (also a ValueError) keeps its position.
    """
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
            return json.loads(text, parse_int=_int_or_infinity)
    except RecursionError:
        raise ValueError(f"nested deeper than {sys.getrecursionlimit()} levels") from None


def _int_or_infinity(text: str) -> int | float:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else float(text)
