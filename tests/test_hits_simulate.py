"""The toy CMS tracker: deterministic, CMS-like geometry, processes that differ in topology but not in hit
multiplicity, ROOT output a user can read."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from cmsdl.sim.geometry import cms_barrel
from cmsdl.sim.tracker import simulate_events, write_root
from cmsdl.tools.hit_counts import hit_count_baseline
from conftest import run_cmsdl


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = (simulate_events("higgs", 50, seed) for seed in (5, 5, 6))
    assert ak.array_equal(a["hit"], b["hit"]) and np.array_equal(a["n_tracks"], b["n_tracks"])
    assert not ak.array_equal(a["hit"], c["hit"])


def test_pixel_barrel_hits_lie_on_the_cms_layers() -> None:
    hits = ak.flatten(simulate_events("qcd", 100, 1, noise=0)["hit"])
    pixel = hits[hits.subdet == 0]
    r = np.hypot(ak.to_numpy(pixel.x), ak.to_numpy(pixel.y))
    layers = cms_barrel().radius[:4]
    assert np.abs(r[:, None] - layers[None, :]).min(axis=1).max() < 0.01
    assert set(np.unique(ak.to_numpy(hits.subdet))) == {0, 1, 2, 3}
    assert np.abs(ak.to_numpy(hits.z)).max() <= 280 and np.hypot(ak.to_numpy(hits.x), ak.to_numpy(hits.y)).max() <= 111


def test_processes_leave_the_same_number_of_hits_but_differ_in_stiff_tracks() -> None:
    events = {p: simulate_events(p, 300, 2) for p in ("jpsi", "qcd", "higgs")}
    n_hits = {p: float(ak.mean(ak.num(e["hit"].x))) for p, e in events.items()}
    assert max(n_hits.values()) < 1.05 * min(n_hits.values())
    low_pt = simulate_events("jpsi", 300, 2, efficiency=0.0, noise=30)
    assert ak.sum(ak.num(low_pt["hit"].x)) == ak.sum(low_pt["n_noise"])


def write_processes(folder: Path, n: int, **settings: float) -> list[Path]:
    folder.mkdir()
    paths = []
    for k, process in enumerate(("jpsi", "qcd")):
        paths.append(folder / f"{process}_000.root")
        write_root(paths[-1], simulate_events(process, n, (7, k), **settings), 0)
    return paths


@pytest.mark.slow
def test_hit_counts_alone_do_not_tell_jpsi_from_qcd(tmp_path: Path) -> None:
    baseline = hit_count_baseline(write_processes(tmp_path / "new", 300), ["jpsi", "qcd"])
    assert baseline["events"] == 600 and baseline["majority_rate"] == 0.5
    assert baseline["total hits"]["accuracy"] < 0.70 and baseline["hits per subdetector"]["accuracy"] < 0.70
    gap = hit_count_baseline(write_processes(tmp_path / "gap", 300, ue_fill_hits=0), ["jpsi", "qcd"])
    assert gap["total hits"]["accuracy"] > 0.85 and gap["hits per subdetector"]["accuracy"] > 0.85


def test_simulate_command_writes_root_trees_and_resumes(tmp_path: Path) -> None:
    proc = run_cmsdl("simulate", "out=raw", "n_events=30", "events_per_file=20", "processes=[jpsi,higgs]", "progress=false",
                     cwd=tmp_path)
    assert "events/s" in proc.stdout
    files = sorted(p.name for p in (tmp_path / "raw").glob("*.root"))
    assert files == ["higgs_000.root", "higgs_001.root", "jpsi_000.root", "jpsi_001.root"]
    tree = uproot.open(tmp_path / "raw" / "jpsi_001.root")["events"]
    assert type(tree).__name__.startswith("Model_TTree") and tree.num_entries == 10
    assert {"hit_x", "hit_y", "hit_z", "hit_layer", "hit_subdet", "process", "n_tracks", "event"} <= set(tree.keys())
    assert tree["event"].array(library="np").tolist() == list(range(20, 30))
    again = run_cmsdl("simulate", "out=raw", "n_events=30", "events_per_file=20", "processes=[jpsi,higgs]",
                      "progress=false", cwd=tmp_path)
    assert "simulated 0 events" in again.stdout
    bad = run_cmsdl("simulate", "out=raw", "processes=[jspi]", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "did you mean 'jpsi'" in bad.stderr
