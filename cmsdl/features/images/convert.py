"""`cmsdl hits2png`: ROOT hits → `out/<class>/<name>.png` + `out/manifest.csv`, chunked, parallel, resumable.

Work is cut into units (one chunk of entries of one tree; units.plan); each unit renders its chunk in slices while
`threads` threads encode and write the previous slice's images atomically (write.ImageWriter), then records its
manifest rows in `out/.parts/<unit>.csv` (manifest.py). A rerun skips finished units, so killing it midway and
running it again completes without duplicate or half-written images; worker processes die with the main process
(kill -9 included). A bad file (unreadable, truncated, missing tree or branch) is reported and skipped; the exit
code is 1 when anything failed. Class names become safe directory names inside `out` (units.safe_name).

Sharding (Kubernetes Indexed Jobs): with shard.index=i shard.count=n a process renders only the units at positions
i, i + n, ... of the plan; manifest.csv and hits2png.json are written by whichever process finds every unit
finished, or by merge_only=true, which renders nothing and fails with one line while units are unfinished.

Inputs are local paths, globs or URLs (root://, https://), listed and opened through cmsdl.io.root like the ROOT
tables (retries with back-off, one error line for an unreachable server).

manifest.csv columns: path (relative to out), class, file, tree, entry, n_hits. hits2png.json: image settings,
channel names, classes (the contract with EventImageDataModule).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.features.images.manifest import (PARTS, check_previous, is_done, labels_order, record_failure,
                                            recorded_failure, remove_stale_temporaries, report, summarize, unfinished,
                                            write_manifest, write_part)
from cmsdl.features.images.png import MODES
from cmsdl.features.images.read import HitChunk, iterate_chunks, regularize_mapping
from cmsdl.features.images.render import regularize_spec, render_chunk
from cmsdl.features.images.units import (Labels, Outcome, RenderUnit, Settings, Shard, expand_inputs, plan,
                                         regularize_shard, safe_name)
from cmsdl.features.images.write import ImageWriter
from cmsdl.io import write_config, write_json

FORMAT = "cmsdl-images/1"
RENDER_SLICE = 128  # events rendered at once; their encoding overlaps the rendering of the next slice
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_parent_pid: int | None = None  # set in worker processes only, by _die_with_parent


def convert_run(run: Sequence[RenderUnit], settings: Settings) -> list[Outcome]:
    """Convert consecutive units of one tree with one read (uproot decompresses a basket that spans several units
    once); a unit that fails is reported, and the units after it are converted one by one."""
    if len(run) > 1:
        done: list[Outcome] = []
        try:
            for unit, n_events in zip(run, _convert(run, settings)):
                done.append(Outcome(unit, n_events=n_events))
        except Exception:
            return done + [convert_unit(unit, settings) for unit in run[len(done):]]
        return done
    return [convert_unit(unit, settings) for unit in run]


def convert_unit(unit: RenderUnit, settings: Settings) -> Outcome:
    """Render and write the images of one unit, then its manifest part; errors come back as text (and are recorded
    in out/.parts for the merge of a sharded run)."""
    try:
        return Outcome(unit, n_events=sum(_convert([unit], settings)))
    except CmsdlError as err:
        error = str(err)
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        error = (f"{unit.file}: tree {unit.tree!r} entries {unit.start}-{unit.stop}: "
                 f"cannot convert ({type(err).__name__}: {detail})")
    try:
        record_failure(Path(settings.out), unit, error)
    except OSError:
        pass  # the outcome still reports it
    return Outcome(unit, error=error)


def _convert(run: Sequence[RenderUnit], settings: Settings) -> Iterator[int]:
    """Render and write the units of `run` (consecutive, one tree; in flat mode one unit), yielding each one's number
    of images once its images and its part are written. Chunks start at unit boundaries (both step by step_size)."""
    out = Path(settings.out)
    first, last = run[0], run[-1]
    where = f"{first.file}: tree {first.tree!r}"
    chunks = iterate_chunks(first.file, first.tree, settings.mapping, settings.step_size, first.start, last.stop,
                            settings.timeout_s, settings.retries)
    with ImageWriter(out, settings.compress_level, settings.threads) as writer:
        rows: list[tuple] = []
        units = iter(run)
        unit = next(units)
        for chunk in chunks:
            if unit is not last and chunk.n_events and int(chunk.entries[0]) >= (unit.stop or 0):
                writer.flush()
                write_part(out, unit, rows)
                yield len(rows)
                rows, unit = [], next(units)
            rows += _convert_chunk(chunk, unit, settings, writer, where)
    write_part(out, unit, rows)
    yield len(rows)


def _convert_chunk(chunk: HitChunk, unit: RenderUnit, settings: Settings, writer: ImageWriter,
                   where: str) -> list[tuple]:
    """Render a chunk slice by slice, handing each slice to the writer; returns the chunk's manifest rows."""
    classes = (settings.labels.names(chunk.labels, where) if chunk.labels is not None
               else np.full(chunk.n_events, unit.label, dtype=object))
    folders = {c: safe_name(str(c)) for c in dict.fromkeys(classes.tolist())}
    paths = [f"{folders[c]}/{unit.base}_{int(entry):07d}.png" for c, entry in zip(classes, chunk.entries)]
    for start, part in event_slices(chunk, RENDER_SLICE):
        _exit_if_orphaned()
        writer.submit(render_chunk(part, settings.spec), paths[start:start + part.n_events])
    return [(p, c, unit.file, unit.tree, int(e), int(n)) for p, c, e, n in zip(paths, classes, chunk.entries,
                                                                             chunk.counts())]


def event_slices(chunk: HitChunk, size: int) -> Iterator[tuple[int, HitChunk]]:
    """The chunk in pieces of at most `size` events (hits are stored event after event): (first event, piece)."""
    if chunk.n_events <= size:
        yield 0, chunk
        return
    bounds = np.searchsorted(chunk.row, np.arange(0, chunk.n_events + size, size).clip(max=chunk.n_events))
    for k, start in enumerate(range(0, chunk.n_events, size)):
        a, b = int(bounds[k]), int(bounds[k + 1])
        stop = min(start + size, chunk.n_events)
        yield start, HitChunk(chunk.entries[start:stop], chunk.row[a:b] - start, {r: v[a:b] for r, v in chunk.hits.items()})


def consecutive_runs(units: Sequence[RenderUnit], workers: int) -> list[list[RenderUnit]]:
    """Units cut into runs of consecutive units of one tree (read together), at most len(units) / workers long so
    that every worker gets work."""
    longest = max(1, -(-len(units) // max(1, workers)))
    runs: list[list[RenderUnit]] = []
    for unit in units:
        previous = runs[-1][-1] if runs else None
        if (previous is not None and len(runs[-1]) < longest and (previous.file, previous.tree) == (unit.file, unit.tree)
                and previous.stop == unit.start):
            runs[-1].append(unit)
        else:
            runs.append([unit])
    return runs


def run_units(units: Sequence[RenderUnit], settings: Settings, workers: int, progress: bool) -> Iterator[Outcome]:
    """Convert units in `workers` processes (0 or 1: in this process), yielding outcomes as they finish.

    A worker reads its own units from the file: only their descriptions and the settings cross processes."""
    from tqdm import tqdm

    bar = tqdm(total=sum(u.n_entries for u in units), desc="hits2png", unit="event", disable=not progress,
               file=sys.stderr)
    runs = consecutive_runs(units, workers)
    try:
        if workers <= 1:
            for run in runs:
                for outcome in convert_run(run, settings):
                    bar.update(outcome.unit.n_entries)
                    yield outcome
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"), initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(convert_run, run, settings) for run in runs]
            for future in as_completed(futures):
                for outcome in future.result():
                    bar.update(outcome.unit.n_entries)
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
    threads = int(cfg.get("threads", 0))
    if threads < 0:
        raise ConfigError(f"threads: expected 0 (encode in the rendering thread) or more, got {threads}")
    return Settings(str(cfg.out), mapping, spec, labels, int(cfg.step_size), int(cfg.compress_level),
                    float(cfg.get("timeout_s", 30)), int(cfg.get("retries", 3)), threads)


def build_shard(cfg: Any) -> Shard:
    shard = cfg.get("shard") or {}
    result = regularize_shard(shard.get("index", 0), shard.get("count", 1))
    if not result.whole and bool(cfg.overwrite):
        raise ConfigError("overwrite: true cannot be combined with shard.count > 1 (each shard would delete the "
                          "others' work); empty out once before starting the shards")
    return result


def settings_document(settings: Settings) -> dict[str, Any]:
    mapping = asdict(settings.mapping)
    return {"format": FORMAT, "image": settings.spec.as_dict(), "mapping": json.loads(json.dumps(mapping)),
            "channels": settings.spec.channel_names}


def hits2png(cfg: Any) -> dict[str, Any]:
    """Convert every input file (or this shard's part of them, or merge the shards' parts); returns the summary
    (also printed, and written to out/hits2png.json with the manifest)."""
    settings = build_settings(cfg)
    shard = build_shard(cfg)
    merge_only = bool(cfg.get("merge_only", False))
    out = Path(cfg.out)
    files = expand_inputs(cfg.input, settings.timeout_s, settings.retries)
    doc = settings_document(settings)
    check_previous(out, doc, bool(cfg.overwrite))
    out.mkdir(parents=True, exist_ok=True)
    if shard.whole:  # shards run side by side: their temporaries are cleaned by the merge
        remove_stale_temporaries(out)
    fingerprint = hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    units, problems = plan(files, settings, fingerprint)
    mine = shard.select(units)
    todo = [] if merge_only else [u for u in mine if not is_done(out, u)]
    outcomes = problems + list(run_units(todo, settings, int(cfg.workers), bool(cfg.progress)))
    missing = unfinished(out, units)
    label = "" if shard.whole else f" (shard {shard.index} of {shard.count})"
    if missing and merge_only:
        first = missing[0]
        raise CmsdlError(f"merge_only: {len(missing)} of {len(units)} units are unfinished (no part in {out / PARTS}; "
                         f"first: {first.file} tree {first.tree!r} entries {first.start}-{first.stop}); "
                         "run the shards that hold them, then merge again")
    if missing and not shard.whole:
        summary = summarize(files, mine, todo, outcomes, None) | {"units_unfinished": len(missing), "units_all": len(units)}
        report(summary, outcomes, None, label)
        return summary
    if merge_only or not shard.whole:
        remove_stale_temporaries(out)
    converted = {u.key for u in todo}
    others = [Outcome(u, error=recorded_failure(out, u)) for u in units if u.key not in converted and not is_done(out, u)]
    return finish(cfg, out, doc, settings.labels, files, units, todo, outcomes + others, label)


def finish(cfg: Any, out: Path, doc: dict[str, Any], labels: Labels, files: Sequence[str], units: Sequence[RenderUnit],
           todo: Sequence[RenderUnit], outcomes: Sequence[Outcome], label: str) -> dict[str, Any]:
    """manifest.csv, hits2png.json and hits2png.config.yaml from the parts of all units (every one is finished)."""
    manifest, n_images, classes = write_manifest(out, units)
    summary = summarize(files, units, todo, outcomes, n_images)
    write_json(out / "hits2png.json", doc | {"classes": labels_order(labels, classes), "n_images": n_images,
                                              "summary": summary})
    write_config(out / "hits2png.config.yaml", cfg)
    report(summary, outcomes, manifest, label)
    return summary


def run(cfg: Any) -> None:
    summary = hits2png(cfg)
    if summary["files_failed"] or summary["events_failed"]:
        raise SystemExit(1)
