"""hits2png's bookkeeping in `out`: one part file per finished unit, failure records, and the manifest merged from them.

`out/.parts/<unit>.csv` holds the manifest rows of a finished unit; `out/.parts/<unit>.failed` the error of a unit
that could not be converted (a rerun tries it again). manifest.csv is written only from a plan whose every unit is
finished or failed. Must not import convert (it renders; this only reads and writes the bookkeeping).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmsdl.errors import ConfigError
from cmsdl.features.images.units import Labels, Outcome, RenderUnit
from cmsdl.io import atomic_write, write_bytes_atomic

MANIFEST_COLUMNS = ("path", "class", "file", "tree", "entry", "n_hits")
PARTS = ".parts"


def part_path(out: Path, unit: RenderUnit, suffix: str = ".csv") -> Path:
    return out / PARTS / f"{unit.key}{suffix}"


def read_part(out: Path, unit: RenderUnit) -> list[list[str]] | None:
    """The manifest rows of a finished unit, or None if it is not finished."""
    path = part_path(out, unit)
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def is_done(out: Path, unit: RenderUnit) -> bool:
    return part_path(out, unit).is_file()


def write_part(out: Path, unit: RenderUnit, rows: Sequence[Sequence[Any]]) -> None:
    """Mark a unit finished (atomically) with its manifest rows; a failure record of an earlier try is removed."""
    with atomic_write(part_path(out, unit), newline="") as handle:
        csv.writer(handle).writerows(rows)
    part_path(out, unit, ".failed").unlink(missing_ok=True)


def record_failure(out: Path, unit: RenderUnit, error: str) -> None:
    """Keep a unit's error for the merge of a sharded run (another process prints the summary)."""
    write_bytes_atomic(part_path(out, unit, ".failed"), error.encode())


def recorded_failure(out: Path, unit: RenderUnit) -> str | None:
    path = part_path(out, unit, ".failed")
    try:
        return path.read_text(errors="replace").strip() or f"{unit.file}: entries {unit.start}-{unit.stop} failed"
    except FileNotFoundError:
        return None


def unfinished(out: Path, units: Sequence[RenderUnit]) -> list[RenderUnit]:
    """Units with neither a part nor a failure record: some process has not converted them yet."""
    return [u for u in units if not is_done(out, u) and not part_path(out, u, ".failed").is_file()]


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
    for tmp in [*out.glob("*/.*.tmp"), *out.glob(f"{PARTS}/.*.tmp")]:
        tmp.unlink(missing_ok=True)


def labels_order(labels: Labels, found: Sequence[str]) -> list[str]:
    """Classes in the order the config names them, then any others in order of appearance."""
    named = list(labels.files) or list(labels.classes)
    return [c for c in named if c in found] + [c for c in found if c not in named]


def summarize(files: Sequence[str], units: Sequence[RenderUnit], todo: Sequence[RenderUnit], outcomes: Sequence[Outcome],
              n_images: int | None) -> dict[str, Any]:
    failed = [o for o in outcomes if o.error]
    failed_files = sorted({o.unit.file for o in failed})
    return {"files": len(files), "files_failed": len(failed_files), "units": len(units),
            "units_skipped_done": len(units) - len(todo),
            "events_converted": sum(o.n_events for o in outcomes),
            "events_failed": sum(o.unit.n_entries for o in failed),
            "warnings": sum(1 for o in outcomes if o.warning), "images_in_manifest": n_images}


def report(summary: Mapping[str, Any], outcomes: Sequence[Outcome], manifest: Path | None, shard: str = "") -> None:
    """Warnings and errors on stderr, then one summary line (`manifest` None: not written yet)."""
    for o in outcomes:
        if o.warning:
            print(f"warning: {o.warning}", file=sys.stderr)
        if o.error:
            print(f"error: {o.error} (skipped)", file=sys.stderr)
    s = summary
    where = (f"{s['images_in_manifest']} images in {manifest}" if manifest is not None else
             f"{s['units_unfinished']} of {s['units_all']} chunks of all shards unfinished, manifest.csv not written yet")
    print(f"hits2png{shard}: {s['files']} files ({s['files_failed']} failed), {s['events_converted']} events converted, "
          f"{s['events_failed']} failed, {s['units_skipped_done']} of {s['units']} chunks already done, "
          f"{s['warnings']} warnings; {where}")
