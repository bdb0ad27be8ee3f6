"""hits2png fanned out: shards render disjoint units of the same plan, the last one (or merge_only) writes the
manifest, and the result equals a single-process run; bad shard settings are one line."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from cmsdl.config import compose_run_config
from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.features.images.convert import hits2png
from cmsdl.features.images.units import Shard, regularize_shard
from cmsdl.sim.tracker import simulate_events, write_root
from conftest import run_cmsdl

N_SHARDS = 3


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small files of three classes: 12 chunks of up to 7 entries in all."""
    folder = tmp_path_factory.mktemp("raw")
    for seed, (process, n) in enumerate((("jpsi", 20), ("qcd", 30), ("higgs", 25))):
        write_root(folder / f"{process}_0.root", simulate_events(process, n, seed), 0)
    return folder


@pytest.fixture
def convert(raw: Path) -> Iterator:
    """hits2png(cfg) in this process, as `cmsdl hits2png <overrides>` would run it."""

    def _convert(out: Path, *overrides: str) -> dict:
        cfg = compose_run_config("hits2png", [f"input={raw}/*.root", f"out={out}", "size=16", "step_size=7",
                                              "workers=0", "progress=false", *overrides], output_dir=out.parent / "run")
        return hits2png(cfg)

    yield _convert
    GlobalHydra.instance().clear()


def manifest_rows(out: Path) -> list[list[str]]:
    with (out / "manifest.csv").open(newline="") as handle:
        return list(csv.reader(handle))


def images(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_shards_then_merge_equal_a_single_run(tmp_path: Path, convert) -> None:
    single = convert(tmp_path / "single", "threads=0")
    out = tmp_path / "sharded"
    summaries = [convert(out, f"shard.index={i}", f"shard.count={N_SHARDS}", "threads=2") for i in range(N_SHARDS)]
    assert [s["units"] for s in summaries] == [4, 4, 12] and single["units"] == 12  # the last one merged
    assert [s.get("units_unfinished") for s in summaries] == [8, 4, None]  # no manifest before the last shard
    assert summaries[-1]["images_in_manifest"] == 75 and sum(s["events_converted"] for s in summaries) == 75
    assert manifest_rows(out) == manifest_rows(tmp_path / "single") and len(manifest_rows(out)) == 76
    assert images(out) == images(tmp_path / "single")  # bit for bit, encoded in threads or not
    assert not list(out.rglob("*.tmp"))
    (out / "manifest.csv").unlink()
    merged = convert(out, "merge_only=true")
    assert merged["events_converted"] == 0 and merged["units_skipped_done"] == 12
    assert manifest_rows(out) == manifest_rows(tmp_path / "single")


def test_no_manifest_until_every_unit_is_done_and_merge_only_says_how_many_are_missing(tmp_path: Path, convert) -> None:
    out = tmp_path / "img"
    first = convert(out, "shard.index=1", f"shard.count={N_SHARDS}")
    assert first["units_unfinished"] == 8 and first["events_converted"] == 4 * 7
    assert not (out / "manifest.csv").exists() and not (out / "hits2png.json").exists()
    with pytest.raises(CmsdlError, match=r"^merge_only: 8 of 12 units are unfinished .*higgs_0.root tree 'events' entries 0-7"):
        convert(out, "merge_only=true")
    assert not (out / "manifest.csv").exists()
    retried = convert(out, "shard.index=1", f"shard.count={N_SHARDS}")  # a retried pod: nothing left to do
    assert retried["events_converted"] == 0 and retried["units_skipped_done"] == 4


def test_failed_units_of_a_shard_are_reported_by_the_merge(tmp_path: Path, convert) -> None:
    """Class codes out of labels.classes fail the qcd and higgs chunks; the merge reports them as a single run does."""
    labels = ["labels.branch=process", "labels.classes=[jpsi]"]
    single = convert(tmp_path / "single", *labels)
    out = tmp_path / "sharded"
    for i in range(N_SHARDS):
        convert(out, *labels, f"shard.index={i}", f"shard.count={N_SHARDS}")
    merged = convert(out, *labels, "merge_only=true")
    assert merged["events_failed"] == single["events_failed"] == 55 and merged["files_failed"] == 2
    assert manifest_rows(out) == manifest_rows(tmp_path / "single") and len(manifest_rows(out)) == 21


@pytest.mark.parametrize("index, count, message", [
    (3, 3, "shard.index: expected 0 to 2 (shard.count=3), got 3"), (0, 0, "shard.count: expected an integer >= 1"),
    (-1, 2, "shard.index: expected 0 to 1"), ("a", 2, "shard.index: expected an integer, got 'a'"),
    (0, "2.5", "shard.count: expected an integer, got '2.5'")])
def test_bad_shard_values_are_one_line(index: object, count: object, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        regularize_shard(index, count)


def test_shards_select_disjoint_units_covering_the_plan() -> None:
    units = list(range(10))
    picked = [Shard(i, 4).select(units) for i in range(4)]  # type: ignore[arg-type]
    assert picked == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]] and Shard(0, 1).select(units) == units  # type: ignore[arg-type]


def test_overwrite_with_shards_and_negative_threads_are_refused(tmp_path: Path, convert) -> None:
    with pytest.raises(ConfigError, match="^overwrite: true cannot be combined with shard.count > 1"):
        convert(tmp_path / "img", "overwrite=true", "shard.count=2")
    with pytest.raises(ConfigError, match="^threads: expected 0 .* got -1$"):
        convert(tmp_path / "img", "threads=-1")
    assert not (tmp_path / "img").exists()


@pytest.mark.slow
def test_shard_command_lines_as_parallel_processes_then_merge(tmp_path: Path, raw: Path) -> None:
    """The pods' command lines, started together as processes, then the merge step: a single run's result."""
    base = [sys.executable, "-m", "cmsdl.cli", "hits2png", f"input={raw}/*.root", "size=16", "step_size=7",
            "progress=false"]
    run_cmsdl(*base[3:], "out=single", "workers=1", cwd=tmp_path)
    pods = [subprocess.Popen([*base, "out=sharded", f"shard.index={i}", f"shard.count={N_SHARDS}", "workers=1"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(N_SHARDS)]
    outputs = [pod.communicate(timeout=300) for pod in pods]
    assert [pod.returncode for pod in pods] == [0] * N_SHARDS, outputs
    merged = run_cmsdl(*base[3:], "out=sharded", "merge_only=true", cwd=tmp_path)
    assert "75 images in" in merged.stdout
    assert manifest_rows(tmp_path / "sharded") == manifest_rows(tmp_path / "single")
    assert images(tmp_path / "sharded") == images(tmp_path / "single")
    bad = run_cmsdl(*base[3:], "out=x", "shard.index=2", "shard.count=2", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: shard.index: expected 0 to 1 (shard.count=2), got 2"
