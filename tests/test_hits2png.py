"""hits2png on ROOT files from other programs: branch mappings, flat and jagged trees, bad files, kill and rerun."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from PIL import Image

from cmsdl.features.images.convert import consecutive_runs, event_slices
from cmsdl.features.images.units import RenderUnit, safe_name
from cmsdl.features.images.write import ImageWriter
from cmsdl.features.images.png import MODES, decode_png, encode_png, encode_pngs
from cmsdl.features.images.read import HitChunk
from cmsdl.features.images.render import coordinates, floored, floored_radius, regularize_spec, render_chunk, render_event
from cmsdl.sim.tracker import simulate_events, write_root
from conftest import run_cmsdl


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_sim(path: Path, process: str, n: int, seed: int = 1) -> Path:
    write_root(path, simulate_events(process, n, seed), 0)
    return path


def test_chunk_rendering_matches_a_per_event_histogram() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 200, 25)
    row = np.repeat(np.arange(25), counts)
    n = len(row)
    hits = {"x": rng.normal(0, 50, n), "y": rng.normal(0, 50, n), "z": rng.normal(0, 120, n),
            "subdet": rng.integers(0, 4, n), "weight": rng.exponential(1.0, n)}
    chunk = HitChunk(np.arange(25), row, hits)
    for spec in (regularize_spec("xy,rz,eta-phi,phi-rho", size=(24, 40)), regularize_spec("rz", "subdetectors", 32)):
        images = render_chunk(chunk, spec)
        reference = np.stack([render_event({k: v[row == e] for k, v in hits.items()}, spec) for e in range(25)])
        assert images.shape == reference.shape and images.dtype == np.uint8
        assert (images != reference).mean() < 1e-3 and images.max() > 0


def test_phi_rho_shows_a_stiff_track_upright_and_a_soft_one_leaning() -> None:
    spec = regularize_spec("phi-rho", size=(32, 128))
    rows, centre = [], -np.pi + 70.5 * 2 * np.pi / 128  # the middle of column 70
    for pt in (100.0, 1.0):
        radius = np.linspace(3.0, 109.5, 40)
        phi = centre - np.arcsin(radius * 0.3 * 3.8 / (200.0 * pt))  # a helix from the beam line, charge +1
        rows.append({"x": radius * np.cos(phi), "y": radius * np.sin(phi), "z": np.zeros(40)})
    hits = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    image = render_chunk(HitChunk(np.arange(2), np.repeat([0, 1], 40), hits), spec)[:, 0]
    columns = [np.flatnonzero(img.any(axis=0)) for img in image]
    occupied_rows = [np.flatnonzero(img.any(axis=1)) for img in image]
    assert columns[0].tolist() == [70] and len(columns[1]) > 10
    assert occupied_rows[0].min() == 0 and occupied_rows[0].max() == 31  # inner layers at the bottom (row 31)
    assert image[1][31, columns[0][0]] > 0 and image[1][0].nonzero()[0][0] < columns[0][0]


@pytest.mark.parametrize("ranges", [(-110.0, 110.0), (0.0, 110.0)])
def test_radius_shortcut_gives_the_hypot_pixel_next_to_pixel_edges(ranges: tuple[float, float]) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    edge = (rng.integers(1, 64, n) * 220 / 64 - 110) * (1 + rng.integers(-4, 5, n) * 2.2e-16)
    angle = rng.uniform(0, np.pi, n)
    hits = {"x": edge * np.cos(angle), "y": np.abs(edge) * np.sin(angle) * np.sign(edge)}
    hits["x"][:4], hits["y"][:4] = [1e200, 1e-170, 3.0, np.inf], [1.0, -1e-160, -0.0, np.nan]
    exact = floored(coordinates(hits, "r"), *ranges, 64)
    assert np.array_equal(floored_radius(hits, *ranges, 64), exact, equal_nan=True)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_writer_round_trips_through_pillow(channels: int) -> None:
    rng = np.random.default_rng(channels)
    images = (rng.integers(0, 256, (3, channels, 9, 13)) * (rng.random((3, channels, 9, 13)) < 0.2)).astype(np.uint8)
    for level in (0, 1, 9):
        pngs = encode_pngs(images, level)
        assert pngs == [encode_png(image, level) for image in images]
        for data, image in zip(pngs, images):
            with Image.open(io.BytesIO(data)) as img:
                assert img.mode == MODES[channels]
                pixels = np.asarray(img).reshape(9, 13, -1)
            assert np.array_equal(np.moveaxis(pixels[..., :channels], -1, 0), image)
            assert not pixels[..., channels:].any()

def foreign_files(folder: Path) -> tuple[Path, Path]:
    """Files as another program writes them: mm units, dotted/slashed names, two trees, labels in a branch."""
    folder.mkdir()
    sim = [simulate_events(p, 12, 3) for p in ("jpsi", "qcd")]
    hit = ak.concatenate([s["hit"] for s in sim])
    jagged = folder / "detector run.root"
    with uproot.recreate(jagged) as f:
        f.mktree("Runs/meta", {"run": np.int32}).extend({"run": np.array([1], np.int32)})
        tree = f.mktree("Tracker/hits", {"pos.x": ak.type(hit.x).content, "pos/y": ak.type(hit.y).content,
                                         "pos.z": ak.type(hit.z).content, "kind": np.int32})
        tree.extend({"pos.x": hit.x * 10, "pos/y": hit.y * 10, "pos.z": hit.z * 10,
                     "kind": np.repeat(np.array([0, 1], np.int32), 12)})
    flat = folder / "flat.root"
    counts = ak.to_numpy(ak.num(hit.x))
    with uproot.recreate(flat) as f:
        f["hits"] = {"evt": np.repeat(np.arange(24), counts).astype(np.int64), "hx": ak.to_numpy(ak.flatten(hit.x)) * 10,
                     "hy": ak.to_numpy(ak.flatten(hit.y)) * 10, "hz": ak.to_numpy(ak.flatten(hit.z)) * 10,
                     "kind": np.repeat(np.repeat([0, 1], 12), counts).astype(np.int32)}
    return jagged, flat


def test_foreign_jagged_tree_with_odd_branch_names(tmp_path: Path) -> None:
    jagged, _ = foreign_files(tmp_path / "in")
    run_cmsdl("hits2png", f"input={jagged}", "out=img", "tree=Tracker/hits", "branches.x=pos.x", "branches.y=pos/y",
              "branches.z=pos.z", "branches.layer=null", "branches.subdet=null", "units=mm", "labels.files={}",
              "labels.branch=kind", "labels.classes=[jpsi,qcd]", "size=32", "step_size=5", "workers=2",
              "progress=false", cwd=tmp_path)
    rows = manifest(tmp_path / "img")
    assert len(rows) == 24 and [r["class"] for r in rows] == ["jpsi"] * 12 + ["qcd"] * 12
    assert sorted(int(r["entry"]) for r in rows) == list(range(24))
    reference = simulate_events("jpsi", 12, 3)["hit"][4]
    spec = regularize_spec("xy", size=32, saturation=4)
    expected = render_event({k: ak.to_numpy(reference[k]).astype(float) for k in ("x", "y", "z")}, spec)
    image = decode_png(tmp_path / "img" / rows[4]["path"], 1)
    assert (image != expected).mean() < 0.01 and int(rows[4]["n_hits"]) == len(reference)


def test_flat_tree_grouped_by_event_across_chunks(tmp_path: Path) -> None:
    _, flat = foreign_files(tmp_path / "in")
    run_cmsdl("hits2png", f"input={flat}", "out=img", "tree=hits", "branches.x=hx", "branches.y=hy", "branches.z=hz",
              "branches.layer=null", "branches.subdet=null", "branches.event=evt", "units=mm", "labels.files={}",
              "labels.branch=kind", "labels.classes=[jpsi,qcd]", "size=32", "step_size=333", "workers=0",
              "progress=false", cwd=tmp_path)
    rows = manifest(tmp_path / "img")
    hits = ak.concatenate([simulate_events(p, 12, 3)["hit"] for p in ("jpsi", "qcd")])
    assert [int(r["entry"]) for r in rows] == list(range(24))
    assert [int(r["n_hits"]) for r in rows] == ak.num(hits.x).tolist()


def test_bad_files_are_reported_and_skipped(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    good = write_sim(raw / "jpsi_good.root", "jpsi", 20)
    data = write_sim(raw / "qcd_whole.root", "qcd", 40).read_bytes()
    (raw / "qcd_truncated.root").write_bytes(data[: len(data) // 2])
    (raw / "qcd_whole.root").unlink()
    (raw / "jpsi_corrupt.root").write_bytes(os.urandom(5000))
    with uproot.recreate(raw / "qcd_empty.root") as f:
        f.mktree("events", {"hit_x": "var * float32", "hit_y": "var * float32", "hit_z": "var * float32"})
    with uproot.recreate(raw / "qcd_renamed.root") as f:
        f["events"] = {"hitX": ak.Array([[1.0]]), "hit_y": ak.Array([[1.0]]), "hit_z": ak.Array([[1.0]])}
    proc = run_cmsdl("hits2png", "input=raw/*.root", "out=img", "branches.layer=null", "branches.subdet=null",
                     "labels.files={jpsi: 'jpsi_*', qcd: 'qcd_*'}", "size=16", "progress=false", cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "jpsi_corrupt.root: not a ROOT file" in err  # the wording of cmsdl.io.root.open_root
    assert "qcd_truncated.root" in err and "qcd_empty.root: tree 'events' is empty" in err
    assert "qcd_renamed.root: tree 'events' has no branch 'hit_x'" in err and "hitX" in err
    assert "5 files (3 failed)" in proc.stdout
    assert len(manifest(tmp_path / "img")) == 20 and good.is_file()


def start_slow_conversion(tmp_path: Path, n_files: int, workers: int) -> tuple[subprocess.Popen, list[str]]:
    """`cmsdl hits2png` started in the background on qcd files, in small chunks that each take a while."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(n_files):
        write_sim(raw / f"qcd_{k}.root", "qcd", 200, seed=k)
    args = [sys.executable, "-m", "cmsdl.cli", "hits2png", "input=raw/*.root", "out=img", "labels.files={qcd: 'qcd_*'}",
            "size=48", "step_size=10", f"workers={workers}", "compress_level=9", "progress=false"]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), args


def test_killed_midway_then_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    proc, args = start_slow_conversion(tmp_path, n_files=3, workers=1)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "img" / ".parts").glob("*.csv"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "img" / "manifest.csv").exists(), "the first run was not killed midway"
    rerun = run_cmsdl(*args[3:], cwd=tmp_path)
    assert "chunks already done" in rerun.stdout
    rows = manifest(tmp_path / "img")
    paths = [r["path"] for r in rows]
    assert len(rows) == 600 and len(set(paths)) == 600
    assert sorted(p.relative_to(tmp_path / "img").as_posix() for p in (tmp_path / "img").rglob("*.png")) == sorted(paths)
    assert not list((tmp_path / "img").rglob("*.tmp"))
    assert all(decode_png(tmp_path / "img" / p, 1).shape == (1, 48, 48) for p in paths)


def test_other_settings_in_the_same_output_need_overwrite(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    write_sim(raw / "jpsi_0.root", "jpsi", 5)
    write_sim(raw / "higgs_0.root", "higgs", 5)
    base = ["hits2png", "input=raw/*.root", "out=img", "progress=false"]
    run_cmsdl(*base, "size=16", cwd=tmp_path)
    again = run_cmsdl(*base, "size=16", cwd=tmp_path)
    assert "2 of 2 chunks already done" in again.stdout
    other = run_cmsdl(*base, "size=24", cwd=tmp_path, check=False)
    assert other.returncode == 2 and "overwrite=true" in other.stderr
    run_cmsdl(*base, "size=24", "overwrite=true", "channels=subdetectors", cwd=tmp_path)
    rows = manifest(tmp_path / "img")
    assert len(rows) == 10 and decode_png(tmp_path / "img" / rows[0]["path"], 2).shape == (2, 24, 24)


@pytest.mark.parametrize("override, message", [("projection=xz", "did you mean 'xy'"), ("units=inch", "units:"),
                                               ("+branches.q=hit_q", "branches.q: unknown role")])
def test_bad_settings_stop_with_one_line(tmp_path: Path, override: str, message: str) -> None:
    write_sim(tmp_path / "jpsi_0.root", "jpsi", 2)
    proc = run_cmsdl("hits2png", "input=*.root", "out=img", override, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("label, expected", [
    ("..", "_."), (".", "_"), ("...", "_.."), (".parts", "_parts"), ("../../etc", "_.-..-etc"), ("a/b", "a-b"),
    ("", "x"), ("-", "x"), ("jpsi", "jpsi"), ("x" * 300, "x" * 91 + "-"), ("Higgs 125", "Higgs-125"),
])
def test_class_labels_become_safe_directory_names(label: str, expected: str) -> None:
    name = safe_name(label)
    assert name.startswith(expected) and len(name) <= 100
    assert "/" not in name and not name.startswith(".") and name not in ("", ".", "..")


def test_hostile_class_labels_stay_inside_out(tmp_path: Path) -> None:
    """Labels `..`, `.`, `.parts` and `../escape` (integer codes through labels.classes) write under out/ only."""
    hostile = ["..", ".", ".parts", "../escape"]
    hit = simulate_events("qcd", 8, 4)["hit"]
    counts = ak.to_numpy(ak.num(hit.x))
    (tmp_path / "in").mkdir()
    with uproot.recreate(tmp_path / "in" / "flat.root") as f:
        f["hits"] = {"evt": np.repeat(np.arange(8), counts).astype(np.int64),
                     "hx": ak.to_numpy(ak.flatten(hit.x)), "hy": ak.to_numpy(ak.flatten(hit.y)),
                     "hz": ak.to_numpy(ak.flatten(hit.z)), "kind": np.repeat(np.arange(8) % 4, counts).astype(np.int32)}
    classes = "[" + ",".join(f"'{c}'" for c in hostile) + "]"
    run_cmsdl("hits2png", "input=in/flat.root", "out=work/img", "tree=hits", "branches.x=hx", "branches.y=hy",
              "branches.z=hz", "branches.layer=null", "branches.subdet=null", "branches.event=evt", "labels.files={}",
              "labels.branch=kind", f"labels.classes={classes}", "size=16", "workers=0", "progress=false", cwd=tmp_path)
    out = tmp_path / "work" / "img"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["img"], "nothing written beside out"
    assert not list((tmp_path / "in").glob("*.png")) and not list(tmp_path.glob("*.png"))
    assert all(p.suffix == ".csv" for p in (out / ".parts").iterdir()), "no image among the resume bookkeeping"
    rows = manifest(out)
    assert [r["class"] for r in rows] == [hostile[e % 4] for e in range(8)]
    folders = {r["class"]: Path(r["path"]).parent.as_posix() for r in rows}
    assert folders == {"..": "_.", ".": "_", ".parts": "_parts", "../escape": "_.-escape"}
    assert all((out / r["path"]).resolve().is_relative_to(out.resolve()) and (out / r["path"]).is_file() for r in rows)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    proc, _ = start_slow_conversion(tmp_path, n_files=2, workers=2)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "img" / ".parts").glob("*.csv")):
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert workers, "the run finished before its workers could be seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived the killed main process"
    finally:
        proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_event_slices_render_the_same_images_as_the_whole_chunk() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 50, 300)
    counts[[0, 127, 128, 299]] = 0  # empty events at slice edges
    row = np.repeat(np.arange(300), counts)
    hits = {"x": rng.normal(0, 50, len(row)), "y": rng.normal(0, 50, len(row)), "z": rng.normal(0, 100, len(row))}
    chunk = HitChunk(np.arange(1000, 1300), row, hits)
    spec = regularize_spec("xy,rz", size=16)
    pieces = list(event_slices(chunk, 128))
    assert [start for start, _ in pieces] == [0, 128, 256] and [p.n_events for _, p in pieces] == [128, 128, 44]
    assert np.array_equal(np.concatenate([render_chunk(p, spec) for _, p in pieces]), render_chunk(chunk, spec))
    assert np.array_equal(np.concatenate([p.entries for _, p in pieces]), chunk.entries)


@pytest.mark.parametrize("threads", [0, 3])
def test_image_writer_writes_the_encoders_bytes_and_leaves_no_temporaries(tmp_path: Path, threads: int) -> None:
    rng = np.random.default_rng(threads)
    images = (rng.integers(0, 256, (50, 2, 8, 8)) * (rng.random((50, 2, 8, 8)) < 0.1)).astype(np.uint8)
    paths = [f"{'ab'[k % 2]}/{k:03d}.png" for k in range(50)]
    with ImageWriter(tmp_path, 1, threads) as writer:
        writer.submit(images[:20], paths[:20])
        writer.submit(images[20:], paths[20:])
    assert [(tmp_path / p).read_bytes() for p in paths] == encode_pngs(images, 1)
    (tmp_path / "taken.png").mkdir()  # a folder where an image should go: the rename fails
    with pytest.raises(OSError):
        with ImageWriter(tmp_path, 1, threads) as writer:
            writer.submit(images[:2], ["ok.png", "taken.png"])
    assert not list(tmp_path.rglob("*.tmp")) and (tmp_path / "ok.png").read_bytes() == encode_png(images[0], 1)


def test_consecutive_units_of_a_tree_are_read_together_but_every_worker_gets_work() -> None:
    def unit(file: str, start: int) -> RenderUnit:
        return RenderUnit(file, "events", start, start + 10, file, None, f"{file}{start}")

    units = [unit("a", 0), unit("a", 10), unit("a", 20), unit("a", 40), unit("b", 0), unit("b", 10)]
    runs = {w: [[f"{u.file}{u.start}" for u in run] for run in consecutive_runs(units, w)] for w in (1, 2, 4)}
    assert runs[1] == [["a0", "a10", "a20"], ["a40"], ["b0", "b10"]]  # a30 is done already: a40 starts a new run
    assert runs[2] == [["a0", "a10", "a20"], ["a40"], ["b0", "b10"]]
    assert runs[4] == [["a0", "a10"], ["a20"], ["a40"], ["b0", "b10"]]
