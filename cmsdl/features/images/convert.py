"""`cmsdl hits2png`: ROOT hits → `out/<class>/<name>.png` + `out/manifest.csv`, chunked, parallel, resumable.

Work is cut into units (one chunk of entries of one tree); each unit renders its chunk at once, writes every
image atomically, then records its manifest rows in `out/.parts/<unit>.csv`. A rerun skips finished units, so
killing it midway and running it again completes without duplicate or half-written images; worker processes die
with the main process (kill -9 included). A bad file (unreadable, truncated, missing tree or branch) is reported
and skipped; the exit code is 1 when anything failed. Class names become safe directory names inside `out`
(see `safe_name`: `..` or `.parts` can never leave `out` or reach its bookkeeping).

Inputs are local paths, globs or URLs (root://, https://), listed and opened through cmsdl.io.root like the ROOT
tables (retries with back-off, one error line for an unreachable server).

manifest.csv columns: path (relative to out), class, file, tree, entry, n_hits. hits2png.json: image settings,
channel names, classes (the contract with EventImageDataModule).
"""

from __future__ import annotations

import csv
import ctypes
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import CmsdlError, ConfigError, InputFormatError
from cmsdl.features.images.png import MODES, encode_png
from cmsdl.features.images.read import HitMapping, iterate_chunks, open_tree, regularize_mapping
from cmsdl.features.images.render import ImageSpec, regularize_spec, render_chunk
from cmsdl.io import atomic_write, write_bytes_atomic, write_config, write_json
from cmsdl.io.root import file_fingerprint, is_remote, match_files

log = logging.getLogger(__name__)
FORMAT = "cmsdl-images/1"
MANIFEST_COLUMNS = ("path", "class", "file", "tree", "entry", "n_hits")
PARTS = ".parts"


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


@dataclass
class Outcome:
    unit: RenderUnit
    n_events: int = 0
    error: str | None = None
    warning: str | None = None


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


MAX_NAME = 100  # characters of a class directory or image name prefix (file systems allow 255 bytes)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_parent_pid: int | None = None  # set in worker processes only, by _die_with_parent


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


def convert_unit(unit: RenderUnit, settings: Settings) -> Outcome:
    """Render and write the images of one unit, then its manifest part; errors come back as text."""
    try:
        return Outcome(unit, n_events=_convert(unit, settings))
    except CmsdlError as err:
        return Outcome(unit, error=str(err))
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        return Outcome(unit, error=f"{unit.file}: tree {unit.tree!r} entries {unit.start}-{unit.stop}: "
                                   f"cannot convert ({type(err).__name__}: {detail})")


def _convert(unit: RenderUnit, settings: Settings) -> int:
    out = Path(settings.out)
    rows = []
    for chunk in iterate_chunks(unit.file, unit.tree, settings.mapping, settings.step_size, unit.start, unit.stop,
                                settings.timeout_s, settings.retries):
        _exit_if_orphaned()
        images = render_chunk(chunk, settings.spec)
        where = f"{unit.file}: tree {unit.tree!r}"
        classes = (settings.labels.names(chunk.labels, where) if chunk.labels is not None
                   else np.full(chunk.n_events, unit.label, dtype=object))
        counts = chunk.counts()
        for i, entry in enumerate(chunk.entries):
            relative = Path(safe_name(str(classes[i]))) / f"{unit.base}_{int(entry):07d}.png"
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, encode_png(images[i], settings.compress_level))
            rows.append((relative.as_posix(), classes[i], unit.file, unit.tree, int(entry), int(counts[i])))
    with atomic_write(out / PARTS / f"{unit.key}.csv", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return len(rows)


def run_units(units: Sequence[RenderUnit], settings: Settings, workers: int, progress: bool) -> Iterator[Outcome]:
    """Convert units in `workers` processes (0 or 1: in this process), yielding outcomes as they finish."""
    from tqdm import tqdm

    bar = tqdm(total=sum((u.stop or 0) - u.start for u in units), desc="hits2png", unit="event", disable=not progress,
               file=sys.stderr)
    try:
        if workers <= 1:
            for unit in units:
                outcome = convert_unit(unit, settings)
                bar.update((unit.stop or 0) - unit.start)
                yield outcome
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"), initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(convert_unit, unit, settings) for unit in units]
            for future in as_completed(futures):
                outcome = future.result()
                bar.update((outcome.unit.stop or 0) - outcome.unit.start)
                yield outcome
    finally:
        bar.close()


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: the kernel kills this worker when the main process dies (Linux: PR_SET_PDEATHSIG;
    the workers are forked by its main thread); elsewhere the check between chunks ends it."""
    global _parent_pid
    _parent_pid = parent_pid
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    _exit_if_orphaned()  # the main process may have died before prctl


def _exit_if_orphaned() -> None:
    """In a worker whose main process is gone: exit at once (nobody is left to collect the results)."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)


def read_part(out: Path, unit: RenderUnit) -> list[list[str]] | None:
    path = out / PARTS / f"{unit.key}.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def write_manifest(out: Path, units: Sequence[RenderUnit]) -> tuple[Path, int, list[str]]:
    """manifest.csv from the parts of all finished units, in input order; returns path, rows and classes."""
    buffer, classes, n = io.StringIO(), {}, 0
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    for unit in units:
        for row in read_part(out, unit) or []:
            writer.writerow(row)
            classes.setdefault(row[1], None)
            n += 1
    with atomic_write(out / "manifest.csv", newline="") as handle:
        handle.write(buffer.getvalue())
    return out / "manifest.csv", n, list(classes)


def check_previous(out: Path, settings_doc: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix images made with other settings into `out`, unless overwrite=true (then start over)."""
    path = out / "hits2png.json"
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    same = {k: previous.get(k) for k in ("image", "mapping")} == {k: settings_doc[k] for k in ("image", "mapping")}
    if same and not overwrite:
        return
    if not overwrite:
        raise ConfigError(f"out: {out} holds images made with other settings ({path}); "
                          "choose another out or pass overwrite=true to redo them")
    shutil.rmtree(out / PARTS, ignore_errors=True)


def remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a killed run (never renamed into place)."""
    for tmp in out.glob("*/.*.tmp"):
        tmp.unlink(missing_ok=True)


def build_settings(cfg: Any) -> Settings:
    mapping = regularize_mapping(cfg.tree, dict(cfg.branches), cfg.units, cfg.labels.get("branch"))
    spec = regularize_spec(cfg.projection, cfg.channels, cfg.size, cfg.get("ranges"), cfg.saturation,
                           cfg.get("subdetector_groups"), cfg.get("group_by", "subdet"))
    if len(spec.channel_names) not in MODES:
        raise ConfigError(f"channels: a PNG holds 1 to 4 channels; these settings make {len(spec.channel_names)}")
    if not mapping.has_xyz and any(p != "eta-phi" for p in spec.projections):
        raise ConfigError(f"projection: {list(spec.projections)} needs branches x, y, z; only eta/phi are mapped")
    files_map = {} if mapping.label_branch else {str(k): str(v) for k, v in (cfg.labels.get("files") or {}).items()}
    if not files_map and not mapping.label_branch:
        raise ConfigError("labels: give labels.files (class → file-name glob) or labels.branch (class per event)")
    labels = Labels(files_map, mapping.label_branch, tuple(cfg.labels.get("classes") or ()))
    if int(cfg.step_size) < 1:
        raise ConfigError(f"step_size: expected a positive number of entries, got {cfg.step_size}")
    return Settings(str(cfg.out), mapping, spec, labels, int(cfg.step_size), int(cfg.compress_level),
                    float(cfg.get("timeout_s", 30)), int(cfg.get("retries", 3)))


def settings_document(settings: Settings) -> dict[str, Any]:
    mapping = asdict(settings.mapping)
    return {"format": FORMAT, "image": settings.spec.as_dict(), "mapping": json.loads(json.dumps(mapping)),
            "channels": settings.spec.channel_names}


def hits2png(cfg: Any) -> dict[str, Any]:
    """Convert every input file; returns the summary (also printed, and written to out/hits2png.json)."""
    settings = build_settings(cfg)
    out = Path(cfg.out)
    files = expand_inputs(cfg.input, settings.timeout_s, settings.retries)
    doc = settings_document(settings)
    check_previous(out, doc, bool(cfg.overwrite))
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    fingerprint = hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    units, outcomes = plan(files, settings, fingerprint)
    todo = [u for u in units if read_part(out, u) is None]
    outcomes += list(run_units(todo, settings, int(cfg.workers), bool(cfg.progress)))
    manifest, n_images, classes = write_manifest(out, units)
    summary = summarize(files, units, todo, outcomes, n_images)
    write_json(out / "hits2png.json", doc | {"classes": labels_order(settings.labels, classes), "n_images": n_images,
                                              "summary": summary})
    write_config(out / "hits2png.config.yaml", cfg)
    report(summary, outcomes, manifest)
    return summary


def labels_order(labels: Labels, found: Sequence[str]) -> list[str]:
    """Classes in the order the config names them, then any others in order of appearance."""
    named = list(labels.files) or list(labels.classes)
    return [c for c in named if c in found] + [c for c in found if c not in named]


def summarize(files: Sequence[str], units: Sequence[RenderUnit], todo: Sequence[RenderUnit], outcomes: Sequence[Outcome],
              n_images: int) -> dict[str, Any]:
    failed = [o for o in outcomes if o.error]
    failed_files = sorted({o.unit.file for o in failed})
    return {"files": len(files), "files_failed": len(failed_files), "units": len(units),
            "units_skipped_done": len(units) - len(todo),
            "events_converted": sum(o.n_events for o in outcomes),
            "events_failed": sum((o.unit.stop or 0) - o.unit.start for o in failed),
            "warnings": sum(1 for o in outcomes if o.warning), "images_in_manifest": n_images}


def report(summary: Mapping[str, Any], outcomes: Sequence[Outcome], manifest: Path) -> None:
    for o in outcomes:
        if o.warning:
            print(f"warning: {o.warning}", file=sys.stderr)
        if o.error:
            print(f"error: {o.error} (skipped)", file=sys.stderr)
    s = summary
    print(f"hits2png: {s['files']} files ({s['files_failed']} failed), {s['events_converted']} events converted, "
          f"{s['events_failed']} failed, {s['units_skipped_done']} of {s['units']} chunks already done, "
          f"{s['warnings']} warnings; {s['images_in_manifest']} images in {manifest}")


def run(cfg: Any) -> None:
    summary = hits2png(cfg)
    if summary["files_failed"] or summary["events_failed"]:
        raise SystemExit(1)
