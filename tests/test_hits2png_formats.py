"""hits2png on files laid out as EDM4hep, Delphes and NanoAOD write them, through a branch mapping alone, and on
root:// inputs from a real XRootD server and http:// ones from a loopback server (opened by cmsdl.io.root, as the
ROOT tables are).

uproot cannot write split TBranchElements, so the TTree writers here put each split branch's children at the top
with the children's own names (`TrackerHits.position.x`, `Track.X`); uproot shows the real files' subbranches by
the same names (full path `TrackerHits/TrackerHits.position.x`). EDM4hep's RNTuple form (podio's RNTupleWriter)
is written as it is: a collection field `TrackerHits` of records with a `position` record.
"""

from __future__ import annotations

import csv
import http.server
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from cmsdl.features.images.png import decode_png
from cmsdl.features.images.render import regularize_spec, render_event
from cmsdl.sim.tracker import simulate_events
from conftest import run_cmsdl
from tests.test_root_remote import RangeHandler
from tests.xrootd_server import stoppable_xrootd_server, xrootd_server  # noqa: F401  fixtures

N_EVENTS = 10
PROCESSES = ("jpsi", "qcd")
COMMON = ("branches.layer=null", "branches.subdet=null", "labels.files={jpsi: 'jpsi_*', qcd: 'qcd_*'}", "size=32",
          "step_size=4", "progress=false")


def hits_of(process: str) -> ak.Array:
    """Simulated tracker hits (cm) of one process: N_EVENTS events of x, y, z lists."""
    return simulate_events(process, N_EVENTS, 5)["hit"]


def write_edm4hep_ttree(path: Path, hits: ak.Array) -> None:
    """podio's TTree layout: tree `events`, collection `TrackerHits` split into `TrackerHits.position.x` ... (mm)."""
    record = ak.zip({"cellID": ak.values_astype(hits.x * 0, np.uint64), "eDep": hits.x * 0 + 2.0,
                     "position.x": hits.x * 10, "position.y": hits.y * 10, "position.z": hits.z * 10})
    with uproot.recreate(path) as f:
        f.mktree("podio_metadata", {"run": np.int32}).extend({"run": np.array([1], np.int32)})
        tree = f.mktree("events", {"TrackerHits": record.type.content}, counter_name=lambda c: f"{c}_size",
                        field_name=lambda outer, inner: f"{outer}.{inner}")
        tree.extend({"TrackerHits": record})


def write_edm4hep_rntuple(path: Path, hits: ak.Array) -> None:
    """podio's RNTuple layout: field `TrackerHits`, a list of records whose `position` is a record x, y, z (mm)."""
    position = ak.zip({"x": hits.x * 10, "y": hits.y * 10, "z": hits.z * 10})
    with uproot.recreate(path) as f:
        f["events"] = {"TrackerHits": ak.zip({"eDep": hits.x * 0 + 1e-6, "position": position}, depth_limit=2)}


def write_delphes(path: Path, hits: ak.Array) -> None:
    """Delphes' layout: tree `Delphes`, TClonesArray `Track` with `Track_size` and `Track.X`-style members (mm)."""
    record = ak.zip({"PT": hits.x * 0 + 1.0, "X": hits.x * 10, "Y": hits.y * 10, "Z": hits.z * 10})
    with uproot.recreate(path) as f:
        tree = f.mktree("Delphes", {"Track": record.type.content}, counter_name=lambda c: f"{c}_size",
                        field_name=lambda outer, inner: f"{outer}.{inner}")
        tree.extend({"Track": record})


def write_nanoaod(path: Path, hits: ak.Array) -> None:
    """NanoAOD's layout: tree `Events`, counter `nHit` and jagged `Hit_x`, `Hit_y`, `Hit_z` (cm)."""
    record = ak.zip({"x": hits.x, "y": hits.y, "z": hits.z})
    with uproot.recreate(path) as f:
        f.mktree("Events", {"Hit": record.type.content}).extend({"Hit": record})


FORMATS: dict[str, tuple[Callable[[Path, ak.Array], None], tuple[str, ...]]] = {
    "edm4hep-ttree-full-path": (write_edm4hep_ttree, (
        "tree=events", "units=mm", "branches.x=TrackerHits/TrackerHits.position.x",
        "branches.y=TrackerHits/TrackerHits.position.y", "branches.z=TrackerHits/TrackerHits.position.z")),
    "edm4hep-ttree": (write_edm4hep_ttree, (
        "tree=events", "units=mm", "branches.x=TrackerHits.position.x", "branches.y=TrackerHits.position.y",
        "branches.z=TrackerHits.position.z", "branches.weight=TrackerHits.eDep")),
    "edm4hep-rntuple": (write_edm4hep_rntuple, (
        "tree=events", "units=mm", "branches.x=TrackerHits.position.x", "branches.y=TrackerHits.position.y",
        "branches.z=TrackerHits.position.z")),
    "delphes": (write_delphes, (
        "tree=Delphes", "units=mm", "branches.x=Track/Track.X", "branches.y=Track.Y", "branches.z=Track.Z")),
    "nanoaod": (write_nanoaod, ("tree=Events", "branches.x=Hit_x", "branches.y=Hit_y", "branches.z=Hit_z")),
}


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_inputs(folder: Path, writer: Callable[[Path, ak.Array], None]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for process in PROCESSES:
        writer(folder / f"{process}_0.root", hits_of(process))
    return folder


def assert_images_match_the_hits(out: Path, weighted: bool = False) -> None:
    """Every event converted, in order, with its hit count, and event 3 of jpsi drawn as from the simulation."""
    rows = manifest(out)
    assert [r["class"] for r in rows] == ["jpsi"] * N_EVENTS + ["qcd"] * N_EVENTS
    hits = {p: hits_of(p) for p in PROCESSES}
    assert [int(r["n_hits"]) for r in rows] == sum((ak.num(hits[p].x).tolist() for p in PROCESSES), [])
    event = {k: ak.to_numpy(hits["jpsi"][3][k]).astype(float) for k in ("x", "y", "z")}
    if weighted:
        event["weight"] = np.full(len(event["x"]), 2.0)
    expected = render_event(event, regularize_spec("xy", size=32, saturation=4))
    image = decode_png(out / rows[3]["path"], 1)
    assert image.any() and (image != expected).mean() < 0.01


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_converts_through_a_mapping_alone(name: str, tmp_path: Path) -> None:
    writer, mapping = FORMATS[name]
    write_inputs(tmp_path / "in", writer)
    run_cmsdl("hits2png", "input=in/*.root", "out=img", "workers=0", *mapping, *COMMON, cwd=tmp_path)
    assert_images_match_the_hits(tmp_path / "img", weighted="branches.weight=TrackerHits.eDep" in mapping)


def test_a_missing_branch_names_the_closest_existing_ones(tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", write_edm4hep_ttree)
    proc = run_cmsdl("hits2png", "input=in/*.root", "out=img", "workers=0", "tree=events", "units=mm",
                     "branches.x=TrackerHits/TrackerHits.position.X", "branches.y=TrackerHits.position.y",
                     "branches.z=TrackerHits.position.z", *COMMON, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert ("jpsi_0.root: tree 'events' has no branch 'TrackerHits/TrackerHits.position.X' (mapped as x); "
            "did you mean 'TrackerHits.position.x'?") in proc.stderr


def test_root_urls_convert_like_local_files(xrootd_server, tmp_path: Path) -> None:  # noqa: F811
    writer, mapping = FORMATS["nanoaod"]
    local = write_inputs(tmp_path / "in", writer)
    remote = xrootd_server.directory / "hits2png"
    shutil.copytree(local, remote, dirs_exist_ok=True)
    run_cmsdl("hits2png", "input=in/*.root", "out=local", "workers=0", *mapping, *COMMON, cwd=tmp_path)
    run_cmsdl("hits2png", f"input={xrootd_server.url('hits2png/*.root')}", "out=remote", "workers=2", *mapping,
              *COMMON, cwd=tmp_path)
    local_rows, remote_rows = manifest(tmp_path / "local"), manifest(tmp_path / "remote")
    assert [r["file"] for r in remote_rows[:1]] == [xrootd_server.url("hits2png/jpsi_0.root")]
    assert [(r["path"], r["n_hits"]) for r in remote_rows] == [(r["path"], r["n_hits"]) for r in local_rows]
    assert all((tmp_path / "remote" / r["path"]).read_bytes() == (tmp_path / "local" / r["path"]).read_bytes()
               for r in local_rows)
    rerun = run_cmsdl("hits2png", f"input={xrootd_server.url('hits2png/*.root')}", "out=remote", "workers=0",
                      *mapping, *COMMON, cwd=tmp_path)
    assert "6 of 6 chunks already done" in rerun.stdout


def test_http_urls_convert_like_local_files(tmp_path: Path) -> None:
    writer, mapping = FORMATS["delphes"]
    local = write_inputs(tmp_path / "in", writer)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.directory = local
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        urls = [f"http://127.0.0.1:{server.server_address[1]}/{p}_0.root" for p in PROCESSES]
        run_cmsdl("hits2png", f"input=[{','.join(urls)}]", "out=img", "workers=0", *mapping, *COMMON, cwd=tmp_path)
    finally:
        server.shutdown()
    assert [r["file"] for r in manifest(tmp_path / "img")][::N_EVENTS] == urls
    assert_images_match_the_hits(tmp_path / "img")


def test_a_stopped_server_is_one_error_line(stoppable_xrootd_server, tmp_path: Path) -> None:  # noqa: F811
    server = stoppable_xrootd_server
    write_inputs(server.directory, write_nanoaod)
    glob_url, file_url = server.url("*.root"), server.url("jpsi_0.root")
    server.stop()
    _, mapping = FORMATS["nanoaod"]
    listing = run_cmsdl("hits2png", f"input={glob_url}", "out=img", "retries=2", *mapping, *COMMON, cwd=tmp_path,
                        check=False)
    assert listing.returncode == 2 and "Traceback" not in listing.stderr
    assert f"error: input: {glob_url}: cannot reach the XRootD server 127.0.0.1:{server.port} after 2 attempts" \
        in listing.stderr
    opening = run_cmsdl("hits2png", f"input={file_url}", "out=img", "retries=2", *mapping, *COMMON, cwd=tmp_path,
                        check=False)
    assert opening.returncode == 1 and "Traceback" not in opening.stderr
    assert f"error: {file_url}: cannot reach the XRootD server 127.0.0.1:{server.port} after 2 attempts" \
        in opening.stderr
