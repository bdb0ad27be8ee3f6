"""hits2png's plan: input files → units of work (one chunk of entries of one tree), their image names and shards.

The plan is deterministic (files sorted, trees and entry ranges in order), so that separate processes (Kubernetes
pods) that plan the same inputs agree on every unit's position and key. Must not import convert (it runs the plan).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmsdl.errors import CmsdlError, ConfigError, InputFormatError
from cmsdl.features.images.read import HitMapping, open_tree
from cmsdl.features.images.render import ImageSpec
from cmsdl.io.root import file_fingerprint, is_remote, match_files

MAX_NAME = 100  # characters of a class directory or image name prefix (file systems allow 255 bytes)


@dataclass(frozen=True)
class Labels:
    """How events get their class: from the file name (class → glob) or from a per-event branch."""

    files: dict[str, str] = field(default_factory=dict)
    branch: str | None = None
    classes: tuple[str, ...] = ()

    def class_of_file(self, path: str) -> str | None:
        name = os.path.basename(path)
        return next((c for c, pattern in self.files.items() if fnmatch.fnmatch(name, pattern)
                     or fnmatch.fnmatch(path, pattern)), None)

    def names(self, values: np.ndarray, where: str) -> np.ndarray:
        """Class names of per-event label values (integer codes index `classes`; strings are names)."""
        if values.dtype.kind in "iu" and self.classes:
            if values.min(initial=0) < 0 or values.max(initial=0) >= len(self.classes):
                raise CmsdlError(f"{where}: label branch {self.branch!r} holds codes {sorted(set(values.tolist()))[:10]}, "
                                 f"expected 0..{len(self.classes) - 1} (labels.classes={list(self.classes)})")
            return np.asarray(self.classes, dtype=object)[values]
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


@dataclass(frozen=True)
class RenderUnit:
    """One chunk of entries of one tree of one file, and the names its images get."""

    file: str
    tree: str
    start: int
    stop: int | None
    base: str
    label: str | None
    key: str

    @property
    def n_entries(self) -> int:
        return (self.stop or 0) - self.start


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; plain and picklable."""

    out: str
    mapping: HitMapping
    spec: ImageSpec
    labels: Labels
    step_size: int
    compress_level: int
    timeout_s: float = 30
    retries: int = 3
    threads: int = 0


@dataclass
class Outcome:
    unit: RenderUnit
    n_events: int = 0
    error: str | None = None
    warning: str | None = None


@dataclass(frozen=True)
class Shard:
    """Which units this process renders: those whose position in the plan is `index` modulo `count`."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        return self.count == 1

    def select(self, units: Sequence[RenderUnit]) -> list[RenderUnit]:
        return [u for position, u in enumerate(units) if position % self.count == self.index]


def regularize_shard(index: object, count: object) -> Shard:
    """shard.index and shard.count checked in one place: integers with 0 <= index < count."""
    values = {}
    for key, value in (("count", count), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value), 10)
            except ValueError:
                raise ConfigError(f"shard.{key}: expected an integer, got {value!r}") from None
        values[key] = value
    if values["count"] < 1:
        raise ConfigError(f"shard.count: expected an integer >= 1 (the number of shards), got {values['count']}")
    if not 0 <= values["index"] < values["count"]:
        raise ConfigError(f"shard.index: expected 0 to {values['count'] - 1} (shard.count={values['count']}), "
                          f"got {values['index']}")
    return Shard(values["index"], values["count"])


def expand_inputs(patterns: str | Sequence[str], timeout_s: float = 30, retries: int = 3) -> list[str]:
    """Sorted files named by the paths, glob patterns (`**` allowed) or URLs (cmsdl.io.root.match_files);
    a name that matches nothing is one error saying why."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: set[str] = set()
    for pattern in map(str, patterns):
        try:
            files.update(f if is_remote(f) else str(Path(f)) for f in match_files(pattern, timeout_s, retries))
        except InputFormatError as err:
            raise InputFormatError(f"input: {err}") from None
    if not files:
        raise ConfigError("input: expected one or more files, got an empty list")
    return sorted(files)


def safe_name(text: str) -> str:
    """`text` as a file or directory name that stays where it is put: runs of characters other than letters,
    digits, `_`, `.` and `-` become `-`, a leading `.` becomes `_` (no `.`, `..` or hidden names), and a name
    longer than MAX_NAME is cut and given a hash of the whole text (so that long names stay distinct)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"
    name = re.sub(r"^\.", "_", name)
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


def location(path: str) -> str:
    """Where a file is, independent of the working directory: the URL of a remote file, else its absolute path."""
    return path if is_remote(path) else str(Path(path).resolve())


def image_bases(files: Sequence[str], trees: Sequence[str]) -> dict[tuple[str, str], str]:
    """Image name prefix per (file, tree): the file stem, + the tree when several, + a hash when stems clash."""
    stems = [Path(f).stem for f in files]
    bases = {}
    for f, stem in zip(files, stems):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(location(f).encode()).hexdigest()[:6]}"
        for tree in trees:
            bases[(f, tree)] = safe_name(stem if len(trees) == 1 else f"{stem}_{tree}")
    return bases


def _unit_key(path: str, identity: str, tree: str, start: int, stop: int | None, fingerprint: str) -> str:
    """The unit's name for resume: file location and content identity (cmsdl.io.root.file_fingerprint), entries,
    settings."""
    text = f"{location(path)}|{identity}|{tree}|{start}|{stop}|{fingerprint}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def plan(files: Sequence[str], settings: Settings, fingerprint: str) -> tuple[list[RenderUnit], list[Outcome]]:
    """Units of work for every readable tree; unreadable files, missing trees and empty trees become outcomes."""
    bases = image_bases(files, settings.mapping.trees)
    units, problems = [], []
    for path in files:
        label = settings.labels.class_of_file(path) if settings.labels.files else None
        identity = None
        for tree_name in settings.mapping.trees:
            probe = RenderUnit(path, tree_name, 0, None, bases[(path, tree_name)], label, "")
            if settings.labels.files and label is None:
                problems.append(Outcome(probe, error=f"{path}: no class: the file name matches none of labels.files "
                                                     f"{settings.labels.files}"))
                break
            try:
                n_entries = int(open_tree(path, tree_name, settings.timeout_s, settings.retries).num_entries)
                identity = identity or file_fingerprint(path, settings.timeout_s, settings.retries)
            except CmsdlError as err:
                problems.append(Outcome(probe, error=str(err)))
                continue
            except Exception as err:
                problems.append(Outcome(probe, error=f"{path}: cannot read tree {tree_name!r} ({type(err).__name__}: {err})"))
                continue
            if n_entries == 0:
                problems.append(Outcome(probe, warning=f"{path}: tree {tree_name!r} is empty, nothing to convert"))
                continue
            step = n_entries if settings.mapping.flat else settings.step_size
            for start in range(0, n_entries, step):
                stop = min(start + step, n_entries)
                units.append(RenderUnit(path, tree_name, start, stop, probe.base, label,
                                        _unit_key(path, identity, tree_name, start, stop, fingerprint)))
    return units, problems
