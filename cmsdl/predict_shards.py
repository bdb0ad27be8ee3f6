"""Sharded `cmsdl predict` (`shard.index=i shard.count=n`, one process or pod per shard): the inputs are cut into
work units, shard i scores units i, i+n, ... into parts, and the parts are merged into `out` in input order.

Work units, in the order a single-process run writes its rows: the PNG images in chunks of `batch_size`, then each
table file (.json, .csv, .npy) as one unit. Shard i writes unit k's rows to `<out>.parts/unit-<k>.npz` (ids and
model outputs, written atomically), so that a retried shard skips the units it finished. `<out>.parts/plan.json`
records the units, the model and the input files (size, mtime): parts of another run are never mixed in. The shard
that finds every part present merges them into `out` (several may: the merge is idempotent and atomic), or
`merge_only=true` does. ROOT inputs need no merge: each shard writes the score files of its inputs, with the names
that a single-process run over all inputs would give them. Torch-free (cmsdl.inference only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.errors import ConfigError, InputFormatError, shown
from cmsdl.inference import Prediction, Predictor
from cmsdl.io import atomic_path, atomic_write
from cmsdl.io.root import file_fingerprint

log = logging.getLogger(__name__)
PLAN = "plan.json"


@dataclass(frozen=True)
class Shard:
    """This process's share of the work: units index, index + count, ... (count 1: everything, no parts)."""

    index: int = 0
    count: int = 1

    def units_of(self, units: list[Any]) -> list[Any]:
        return units[self.index::self.count]


def shard_from_config(given: Any) -> Shard:
    """`shard.index` and `shard.count` checked: whole numbers, 0 <= index < count."""
    given = given or {}
    index, count = given.get("index", 0), given.get("count", 1)
    for key, value, low in (("count", count, 1), ("index", index, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"shard.{key}: expected a whole number >= {low}, got {shown(value)}")
    if index >= count:
        raise ConfigError(f"shard.index: {index} is not below shard.count {count} (shards are numbered 0 to "
                          f"{count - 1})")
    return Shard(index, count)


@dataclass(frozen=True)
class Unit:
    """One work unit: a chunk of PNG images, or one table file."""

    number: int
    files: tuple[Path, ...]


def work_units(files: list[Path], batch_size: int) -> list[Unit]:
    """The units in the order a single-process run writes their rows (cmsdl.predict.batches)."""
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    groups = [tuple(pngs[i:i + batch_size]) for i in range(0, len(pngs), batch_size)]
    groups += [(f,) for f in files if f.suffix.lower() != ".png"]
    return [Unit(number, group) for number, group in enumerate(groups)]


def parts_directory(out: Path) -> Path:
    """Where the parts of `out` are written: `<out>.parts/` beside it, in the same output tree."""
    return out.parent / f"{out.name}.parts"


def part_path(parts: Path, unit: Unit | int) -> Path:
    number = unit.number if isinstance(unit, Unit) else unit
    return parts / f"unit-{number:06d}.npz"


def plan_of(units: list[Unit], model: str, predictor: Predictor) -> dict[str, Any]:
    """What the parts are parts of: the model and every unit's files, each with its fingerprint."""
    return {"model": {"path": str(model), "fingerprint": file_fingerprint(str(model))},
            "class_names": list(predictor.contract.class_names), "task": predictor.contract.task,
            "units": [[[str(f), file_fingerprint(str(f))] for f in unit.files] for unit in units]}


def check_or_write_plan(parts: Path, plan: dict[str, Any]) -> None:
    """Write the plan, or check that the parts already there belong to the same inputs and model."""
    path = parts / PLAN
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out: cannot create {parts} ({err.strerror})") from None
    if path.exists():
        if read_plan(parts) != plan:
            raise ConfigError(f"out: {parts} holds the parts of another run (other inputs, model or batch_size); "
                              "delete it or choose another out")
        return
    with atomic_write(path) as handle:
        json.dump(plan, handle, indent=1)


def read_plan(parts: Path) -> dict[str, Any]:
    try:
        return json.loads((parts / PLAN).read_text())
    except FileNotFoundError:
        raise ConfigError(f"out: no sharded run has written {parts / PLAN}; run the shards first "
                          "(shard.index=<i> shard.count=<n>)") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"out: {parts / PLAN} is not readable ({err}); delete {parts} and run the shards again") \
            from None


def predict_unit(predictor: Predictor, unit: Unit, batch_size: int) -> tuple[list[str], np.ndarray]:
    """Ids and model outputs of every row of one unit, batched as a single-process run batches them."""
    from cmsdl.predict import batches, predict_batch

    ids: list[str] = []
    outputs = [np.zeros((0, len(predictor.contract.class_names)), np.float32)]
    for batch in batches(list(unit.files), batch_size):
        ids += batch.ids
        outputs.append(predict_batch(predictor, batch).outputs)
    return ids, np.concatenate(outputs)


def write_part(path: Path, ids: list[str], outputs: np.ndarray) -> None:
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, ids=np.array(ids, dtype=str), outputs=outputs)


def read_part(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as part:
            return [str(i) for i in part["ids"]], part["outputs"]
    except (OSError, ValueError, KeyError) as err:
        raise InputFormatError(f"{path}: not a readable part ({err}); delete it and run its shard again") from None


def run_shard(predictor: Predictor, model: str, files: list[Path], out: Path, batch_size: int,
              shard: Shard) -> list[Path]:
    """Score this shard's units that have no part yet; returns the parts it wrote."""
    units = work_units(files, batch_size)
    parts = parts_directory(out)
    check_or_write_plan(parts, plan_of(units, model, predictor))
    written = []
    for unit in shard.units_of(units):
        path = part_path(parts, unit)
        if path.exists():
            log.info("unit %d (%s) already scored in %s: skipped", unit.number, unit.files[0], path)
            continue
        write_part(path, *predict_unit(predictor, unit, batch_size))
        written.append(path)
    done = len(shard.units_of(units)) - len(written)
    print(f"shard {shard.index} of {shard.count}: scored {len(written)} of its {len(shard.units_of(units))} "
          f"units into {parts}" + (f" ({done} already done)" if done else ""))
    return written


def missing_parts(out: Path) -> list[int]:
    parts = parts_directory(out)
    return [k for k in range(len(read_plan(parts)["units"])) if not part_path(parts, k).exists()]


def merge_parts(out: Path) -> int:
    """Concatenate every part, in unit order, into `out` (written atomically); returns the number of rows."""
    from cmsdl.predict import write_predictions

    parts = parts_directory(out)
    plan = read_plan(parts)
    missing = missing_parts(out)
    if missing:
        first = plan["units"][missing[0]][0][0]
        raise InputFormatError(f"out: {len(missing)} of {len(plan['units'])} parts are missing in {parts} (unit "
                               f"{missing[0]}: {first}{', ...' if len(missing) > 1 else ''}); run the shards that "
                               "score them first")
    ids: list[str] = []
    outputs = []
    for number in range(len(plan["units"])):
        part_ids, part_outputs = read_part(part_path(parts, number))
        ids += part_ids
        outputs.append(part_outputs)
    if not ids:
        raise InputFormatError("input: no records, rows or images found")
    write_predictions(out, ids, Prediction(np.concatenate(outputs), plan["class_names"], plan["task"]))
    return len(ids)


def merge_when_complete(out: Path) -> bool:
    """Merge if every part is there (this shard finished last); else say how the merge happens."""
    missing = missing_parts(out)
    if missing:
        print(f"{len(missing)} units of other shards are not scored yet: the shard that finishes last writes {out} "
              "(or run the same command with merge_only=true)")
        return False
    rows = merge_parts(out)
    print(f"merged {rows} predictions from {parts_directory(out)} into {out}")
    return True
