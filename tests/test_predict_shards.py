"""Sharded `cmsdl predict` (shard.index / shard.count / merge_only): shards in any order, merged, give what one
process gives; a retried shard skips its finished units; parts of another run are never mixed in; ROOT inputs that
share a file name keep a single run's score file names when their shards run apart."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import toy_onnx
import uproot
from PIL import Image

from cmsdl.config import compose_run_config
from cmsdl.errors import CmsdlError, ConfigError, InputFormatError
from cmsdl.predict import predict
from cmsdl.predict_shards import Shard, parts_directory, shard_from_config, work_units
from tests.test_predict_hostile import SPEC, table_model, write_events


def run_predict(*overrides: str) -> str:
    """`cmsdl predict <overrides>` in this process; what it printed."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        cfg = compose_run_config("predict", list(overrides))
    finally:
        GlobalHydra.instance().clear()
    printed = io.StringIO()
    with redirect_stdout(printed):
        predict(cfg)
    return printed.getvalue()


@pytest.fixture()
def tables(tmp_path: Path) -> Path:
    """A 4-feature model and five .npy / .csv inputs of different lengths (one empty)."""
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    toy_onnx.write(tmp_path / "m.onnx", toy_onnx.top_model(4))
    for i, n in enumerate([7, 0, 12, 3]):
        np.save(tmp_path / "in" / f"t{i}.npy", rng.normal(size=(n, 4)).astype(np.float32))
    rows = rng.normal(size=(5, 4))
    (tmp_path / "in" / "rows.csv").write_text("f00,f01,f02,f03\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return tmp_path


def test_shards_in_any_order_merge_into_what_one_process_writes(tables: Path) -> None:
    common = [f"onnx={tables / 'm.onnx'}", f"input=[{tables / 'in'}/*.npy,{tables / 'in'}/*.csv]", "batch_size=4"]
    run_predict(*common, f"out={tables / 'single.csv'}")
    for index in (2, 0):
        printed = run_predict(*common, f"out={tables / 'merged.csv'}", f"shard.index={index}", "shard.count=3")
        assert "the shard that finishes last writes" in printed and not (tables / "merged.csv").exists()
    last = run_predict(*common, f"out={tables / 'merged.csv'}", "shard.index=1", "shard.count=3")
    assert "merged 27 predictions" in last
    assert (tables / "merged.csv").read_text() == (tables / "single.csv").read_text()
    assert len(list(parts_directory(tables / "merged.csv").glob("unit-*.npz"))) == 5


def test_a_retried_shard_skips_finished_units_and_merge_only_merges(tables: Path) -> None:
    common = [f"onnx={tables / 'm.onnx'}", f"input={tables / 'in'}/*.npy", f"out={tables / 'p.json'}", "shard.count=2"]
    run_predict(*common, "shard.index=0")
    parts = parts_directory(tables / "p.json")
    first = {p: p.stat().st_mtime_ns for p in parts.glob("unit-*.npz")}
    assert len(first) == 2
    with pytest.raises(InputFormatError, match=r"out: 2 of 4 parts are missing in .*p\.json\.parts \(unit 1: .*t1\.npy"):
        run_predict(*common, "merge_only=true")
    again = run_predict(*common, "shard.index=0")
    assert "scored 0 of its 2 units" in again and "(2 already done)" in again
    assert {p: p.stat().st_mtime_ns for p in parts.glob("unit-*.npz")} == first
    run_predict(*common, "shard.index=1")
    (tables / "p.json").unlink()
    assert "merged 22 predictions" in run_predict(*common, "merge_only=true")
    run_predict(f"onnx={tables / 'm.onnx'}", f"input={tables / 'in'}/*.npy", f"out={tables / 'single.json'}")
    assert (tables / "p.json").read_text() == (tables / "single.json").read_text()


def test_parts_of_another_run_are_not_mixed_in(tables: Path) -> None:
    common = [f"onnx={tables / 'm.onnx'}", f"out={tables / 'p.csv'}", "shard.count=2", "shard.index=0"]
    run_predict(*common, f"input={tables / 'in'}/*.npy")
    with pytest.raises(ConfigError, match=r"p\.csv\.parts holds the parts of another run"):
        run_predict(*common, f"input={tables / 'in'}/t0.npy")


def test_png_images_are_cut_into_chunks_of_batch_size(tmp_path: Path) -> None:
    toy_onnx.write(tmp_path / "img.onnx", toy_onnx.image_model(2, 8))
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"e{i}.png")
    units = work_units(sorted(tmp_path.glob("*.png")), 2)
    assert [len(u.files) for u in units] == [2, 2, 1]
    common = [f"onnx={tmp_path / 'img.onnx'}", f"input={tmp_path}/*.png", "batch_size=2"]
    run_predict(*common, f"out={tmp_path / 'single.csv'}")
    for index in range(2):
        run_predict(*common, f"out={tmp_path / 'merged.csv'}", f"shard.index={index}", "shard.count=2")
    assert (tmp_path / "merged.csv").read_text() == (tmp_path / "single.csv").read_text()


def test_root_shards_keep_the_score_file_names_of_a_single_run(tmp_path: Path) -> None:
    model = table_model(tmp_path / "m.onnx", SPEC)
    for job, seed in (("job_1", 1), ("job_2", 2), ("job_3", 3)):
        write_events(tmp_path / "crab" / job / "tree_1.root", 40, seed=seed)
    common = [f"onnx={model}", f"input={tmp_path}/crab/*/tree_1.root"]
    run_predict(*common, f"out={tmp_path / 'single'}")
    for index in range(3):
        run_predict(*common, f"out={tmp_path / 'sharded'}", f"shard.index={index}", "shard.count=3")
    names = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert len(names) == 3 and sorted(p.name for p in (tmp_path / "sharded").iterdir()) == names
    for name in names:
        single = uproot.open(tmp_path / "single" / name)["Scores"].arrays(library="np")
        sharded = uproot.open(tmp_path / "sharded" / name)["Scores"].arrays(library="np")
        assert np.array_equal(single["score_sig"], sharded["score_sig"])


@pytest.mark.parametrize("given, message", [
    ({"index": 3, "count": 3}, r"shard.index: 3 is not below shard.count 3"),
    ({"index": -1, "count": 3}, r"shard.index: expected a whole number >= 0, got -1"),
    ({"index": 0, "count": 0}, r"shard.count: expected a whole number >= 1, got 0"),
    ({"index": "1", "count": 2}, r"shard.index: expected a whole number >= 0, got '1'"),
    ({"index": 0, "count": True}, r"shard.count: expected a whole number >= 1, got True"),
])
def test_bad_shard_settings_are_one_line_errors(given: dict, message: str) -> None:
    with pytest.raises(CmsdlError, match=message):
        shard_from_config(given)


def test_shard_takes_every_count_th_unit() -> None:
    assert Shard(1, 3).units_of(list(range(8))) == [1, 4, 7]
    assert Shard().units_of([1, 2]) == [1, 2]
