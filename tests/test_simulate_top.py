"""The toy NanoAOD simulator: NanoAOD branch names and types, jets as NanoAOD writes them, deterministic,
a signal that differs from the background where it should (b tags, top mass), resumable command, clear errors."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from omegaconf import OmegaConf

from cmsdl.errors import ConfigError
from cmsdl.sim.nanoaod import check_config, simulate_events
from tests.conftest import run_cmsdl

BRANCHES = {"run": "uint32", "luminosityBlock": "uint32", "event": "uint64", "nJet": "int32", "Jet_pt": "float32",
            "Jet_eta": "float32", "Jet_phi": "float32", "Jet_mass": "float32", "Jet_btagDeepFlavB": "float32",
            "Jet_hadronFlavour": "int32", "MET_pt": "float32", "MET_phi": "float32", "PV_npvs": "int32",
            "genWeight": "float32"}


@pytest.fixture(scope="module")
def samples() -> dict[str, dict]:
    """3000 events of each process, as the simulator returns them."""
    return {p: simulate_events(p, 3000, (11, i)) for i, p in enumerate(("ttbar", "qcd"))}


def read(path: Path) -> dict[str, np.ndarray | ak.Array]:
    """Every branch of the tree Events."""
    tree = uproot.open(path)["Events"]
    return {key: tree[key].array(library="ak") for key in tree.keys()}


def three_jet_mass(jets: ak.Array) -> np.ndarray:
    """Per event, the mass of the three-jet combination (of the six leading jets) with the largest pt (M3)."""
    c = ak.combinations(jets[:, :6], 3, fields=["a", "b", "c"])
    parts = [c[f] for f in "abc"]
    px = sum(j.pt * np.cos(j.phi) for j in parts)
    py = sum(j.pt * np.sin(j.phi) for j in parts)
    pz = sum(j.pt * np.sinh(j.eta) for j in parts)
    e = sum(np.sqrt((j.pt * np.cosh(j.eta)) ** 2 + j.mass**2) for j in parts)
    best = ak.argmax(px**2 + py**2, axis=1, keepdims=True)
    m = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    return ak.to_numpy(ak.fill_none(ak.firsts(m[best]), 0.0))


def test_command_writes_nanoaod_trees_resumes_and_rejects_bad_settings(tmp_path: Path) -> None:
    args = ["simulate-top", "out=top", "n_events=300", "events_per_file=200", "seed=1", "progress=false"]
    proc = run_cmsdl(*args, cwd=tmp_path)
    assert "simulated 600 events" in proc.stdout and "events/s" in proc.stdout
    out = tmp_path / "top"
    names = ["qcd_000.root", "qcd_001.root", "ttbar_000.root", "ttbar_001.root"]
    assert sorted(p.name for p in out.glob("*.root")) == names and not list(out.glob(".*"))
    tree = uproot.open(out / "ttbar_001.root")["Events"]
    assert tree.num_entries == 100 and tree.keys() == list(BRANCHES)
    assert all(tree[k].count_branch.name == "nJet" for k in tree.keys() if k.startswith("Jet_"))
    events = read(out / "ttbar_001.root")
    assert {k: str(ak.type(v)).split(" * ")[-1] for k, v in events.items()} == BRANCHES
    assert all(str(ak.type(events[k])).count("var") == k.startswith("Jet_") for k in BRANCHES)
    assert events["event"].tolist() == list(range(201, 301)) and set(events["run"].tolist()) == {1}
    assert ak.all(events["nJet"] == ak.num(events["Jet_pt"]))

    before = {name: (out / name).stat().st_mtime_ns for name in names}
    lost = read(out / "qcd_001.root")
    (out / "qcd_001.root").unlink()                      # an interrupted run: the last file never got written
    again = run_cmsdl(*args, cwd=tmp_path)
    assert "simulated 100 events" in again.stdout
    assert all((out / n).stat().st_mtime_ns == before[n] for n in names if n != "qcd_001.root")
    redone = read(out / "qcd_001.root")
    assert all(ak.array_equal(lost[k], redone[k]) for k in BRANCHES)

    for bad, text in (("processes=[ttbar,foo]", "unknown process 'foo'"), ("n_events=-1", "n_events")):
        proc = run_cmsdl("simulate-top", "out=bad", bad, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and text in proc.stderr
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("override", [{"processes": ["tbar"]}, {"processes": []}, {"events_per_file": 0},
                                      {"n_events": "many"}, {"jet_eta_max": 6.0}, {"pileup": -1}])
def test_bad_settings_name_the_key(override: dict) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(Path(__file__).parents[1] / "configs" / "simulate_top.yaml"), override)
    with pytest.raises(ConfigError, match=next(iter(override))):
        check_config(cfg)


def test_jets_are_sorted_counted_and_within_acceptance(samples: dict[str, dict]) -> None:
    for events in samples.values():
        jets = events["Jet"]
        assert ak.all(jets.pt[:, 1:] <= jets.pt[:, :-1]) and ak.all(jets.pt > 20) and ak.all(abs(jets.eta) < 2.5)
        assert ak.all(abs(jets.phi) <= np.pi) and ak.all((jets.btagDeepFlavB >= 0) & (jets.btagDeepFlavB <= 1))
        assert set(np.unique(ak.to_numpy(ak.flatten(jets.hadronFlavour)))) <= {0, 4, 5}
        assert np.all(events["MET_pt"] >= 0) and abs(events["PV_npvs"].mean() - 30) < 1
        assert len({len(events[k]) for k in BRANCHES if k in events}) == 1
    tight = simulate_events("qcd", 300, 1, jet_pt_min=40.0, jet_eta_max=1.0)["Jet"]
    assert ak.all(tight.pt > 40) and ak.all(abs(tight.eta) < 1.0)


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = (simulate_events("ttbar", 200, seed) for seed in (5, 5, 6))
    assert all(ak.array_equal(a[k], b[k]) for k in a)
    assert not ak.array_equal(a["Jet"], c["Jet"]) and not np.array_equal(a["MET_pt"], c["MET_pt"])


def test_signal_has_b_jets_and_a_top_mass_peak(samples: dict[str, dict]) -> None:
    n_btag = {p: float(np.mean(ak.sum(ev["Jet"].btagDeepFlavB > 0.3, axis=1))) for p, ev in samples.items()}
    assert n_btag["ttbar"] > 1.2 and n_btag["qcd"] < 0.4
    jets = ak.concatenate([ev["Jet"] for ev in samples.values()])
    for flavour, low, high in ((5, 0.62, 0.78), (4, 0.08, 0.25), (0, 0.005, 0.03)):
        tagged = ak.to_numpy(ak.flatten(jets.btagDeepFlavB[jets.hadronFlavour == flavour])) > 0.3
        assert low < tagged.mean() < high, (flavour, tagged.mean())
    m3 = {p: three_jet_mass(ev["Jet"]) for p, ev in samples.items()}
    counts, edges = np.histogram(m3["ttbar"], bins=np.arange(50, 400, 15))
    assert 150 <= edges[counts.argmax()] + 7.5 <= 195
    window = {p: np.mean((m > 150) & (m < 195)) for p, m in m3.items()}
    assert window["ttbar"] > 1.5 * window["qcd"]


def test_qcd_weights_fall_with_ht_and_signal_weights_are_one(samples: dict[str, dict]) -> None:
    assert np.all(samples["ttbar"]["genWeight"] == 1.0)
    qcd = samples["qcd"]
    weight, ht = qcd["genWeight"], ak.to_numpy(ak.sum(qcd["Jet"].pt, axis=1))
    assert np.all(weight > 0) and np.corrcoef(ht, np.log(weight))[0, 1] < -0.5
