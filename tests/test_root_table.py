"""ROOT tables: feature spec, streaming DataModule (splits, statistics, workers, cache), DeepSets, score files."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from cmsdl.data.root_table import RootTableDataModule
from cmsdl.errors import ConfigError, InputFormatError
from cmsdl.features.root_table.read import ReadUnit, plan_units, read_unit, split_of
from cmsdl.features.root_table.spec import parse_spec
from cmsdl.models.deepsets import DeepSets


def write_nano(path: Path, n: int, seed: int, signal: bool) -> None:
    """A small NanoAOD-like file: nJet + Jet_* (unsorted on purpose), MET_pt, genWeight."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2 if not signal else 4, 9, n)
    total = int(counts.sum())
    pt = rng.exponential(40 if signal else 25, total).astype(np.float32) + 20
    jets = ak.zip({"pt": ak.unflatten(pt, counts), "eta": ak.unflatten(rng.normal(0, 1.2, total).astype(np.float32), counts),
                   "btagDeepFlavB": ak.unflatten(rng.uniform(0, 1, total).astype(np.float32), counts)})
    write_tree(path, "Events", {"Jet": jets, "MET_pt": rng.exponential(30, n).astype(np.float32),
                                "genWeight": rng.uniform(0.5, 1.5, n).astype(np.float32)})


def write_tree(path: Path, name: str, data: dict) -> None:
    """A TTree (uproot's `file[name] = ...` writes an RNTuple)."""
    with uproot.recreate(path) as f:
        tree = f.mktree(name, {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in data.items()})
        tree.extend(data)


SPEC = {
    "tree": "Events",
    "flat": ["MET_pt"],
    "collections": {"jet": {"fields": {"pt": "Jet_pt", "eta": "Jet_eta", "btag": "Jet_btagDeepFlavB"},
                            "sort_by": "pt", "length": 4, "pad": -1.0}},
    "derived": {"HT": "sum(Jet_pt)", "n_btag": "count(Jet_btagDeepFlavB > 0.5)"},
    "selection": "nJet >= 3",
    "weight": "genWeight",
}


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("nano")
    files: dict[str, list[str]] = {"sig": [], "bkg": []}
    for i in range(2):
        for name, signal in (("sig", True), ("bkg", False)):
            path = root / f"{name}_{i}.root"
            write_nano(path, 1500, seed=10 * i + signal, signal=signal)
            files[name].append(str(path))
    return files


def spec_with(files: dict[str, list[str]], **changes: object) -> dict:
    return {**SPEC, "files": files, **changes}


def test_features_follow_the_spec(nano: dict[str, list[str]]) -> None:
    spec = parse_spec(spec_with(nano))
    assert spec.feature_names[:4] == ["MET_pt", "HT", "n_btag", "jet_n"]
    assert spec.feature_names[4:7] == ["jet1_pt", "jet1_eta", "jet1_btag"]
    path = nano["bkg"][0]
    chunk = read_unit(spec, ReadUnit(path, 1, 0, 1500))
    events = uproot.open(path)["Events"].arrays(library="ak")
    pt = events["Jet_pt"]
    i = int(np.argmax(ak.to_numpy(ak.num(pt)) == 2))  # an event with 2 jets: slots 3 and 4 are padding
    row = dict(zip(spec.feature_names, chunk.features[i]))
    assert row["jet_n"] == 2 and row["jet3_pt"] == -1.0 and row["jet4_eta"] == -1.0
    assert row["jet1_pt"] == pytest.approx(float(ak.max(pt[i]))) and row["jet1_pt"] >= row["jet2_pt"]
    assert row["HT"] == pytest.approx(float(ak.sum(pt[i])), rel=1e-5)
    assert row["n_btag"] == int(ak.sum(events["Jet_btagDeepFlavB"][i] > 0.5))
    assert not chunk.selected[i]
    assert np.array_equal(chunk.selected, ak.to_numpy(events["nJet"] >= 3))
    assert np.allclose(chunk.weights, ak.to_numpy(events["genWeight"]))
    assert (chunk.labels == 1).all() and np.array_equal(chunk.entries, np.arange(1500))


@pytest.mark.parametrize("change, message", [
    ({"derived": {"x": "Jet_pt.__class__"}}, "uses Attribute"),
    ({"derived": {"x": "open('f')"}}, "calls open"),
    ({"collections": {"jet": {"fields": {"pt": "Jet_pt"}, "sort_by": "eta"}}}, "sort_by: 'eta' is not one of"),
    ({"selektion": "nJet > 2"}, "did you mean 'selection'"),
    ({"flat": ["MET_pt"], "derived": {"MET_pt": "MET_pt * 2"}}, "defined twice"),
])
def test_bad_spec_is_one_clear_error(nano: dict[str, list[str]], change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec_with(nano, **change))


def test_unknown_branch_names_the_file_and_the_closest_branches(nano: dict[str, list[str]]) -> None:
    spec = parse_spec(spec_with(nano, flat=["MET_ptt"]))
    with pytest.raises(InputFormatError, match=r"sig_0.root: tree 'Events' has no branch 'MET_ptt'; closest: MET_pt"):
        plan_units(spec)
    with pytest.raises(InputFormatError, match="no tree 'Event'.*did you mean 'Events'"):
        plan_units(parse_spec(spec_with(nano, tree="Event")))
    with pytest.raises(InputFormatError, match="matches no file"):
        plan_units(parse_spec(spec_with({"sig": ["/nonexistent/*.root"], "bkg": nano["bkg"]})))


def test_split_is_stable_and_follows_the_fractions() -> None:
    entries = np.arange(200_000)
    split = split_of("/a/b/f.root", entries, (0.7, 0.15, 0.15), seed=1)
    assert np.allclose(np.bincount(split) / len(split), [0.7, 0.15, 0.15], atol=0.01)
    assert np.array_equal(split, split_of("root://host//other/dir/f.root", entries, (0.7, 0.15, 0.15), seed=1))
    assert np.array_equal(split[500:600], split_of("/a/b/f.root", entries[500:600], (0.7, 0.15, 0.15), seed=1))
    assert not np.array_equal(split, split_of("/a/b/g.root", entries, (0.7, 0.15, 0.15), seed=1))


def rows_of(dm: RootTableDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for batch in dm.split_loader(split):
        xs.append(batch[0].numpy())
        ys.append(batch[1].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_datamodule_streams_disjoint_splits_with_training_statistics(nano: dict[str, list[str]]) -> None:
    dm = RootTableDataModule(spec_with(nano), step_size=700, batch_size=256, progress=False)
    dm.setup()
    assert len(dm.units) == 12  # 4 files x ceil(1500 / 700)
    ids = {s: dm.split_ids(s) for s in ("train", "val", "test")}
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    selected = sum(int((uproot.open(f)["Events"]["nJet"].array(library="np") >= 3).sum()) for fs in nano.values() for f in fs)
    assert sum(len(v) for v in ids.values()) == selected
    x, y = rows_of(dm, "train")
    assert np.allclose(x.mean(axis=0), 0, atol=1e-3) and np.allclose(x.std(axis=0), 1, atol=1e-2)
    assert set(np.unique(y)) == {0, 1}
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 3 and batch[0].shape == (256, len(dm.feature_names)) and batch[2].dtype == torch.float32


def test_workers_and_cache_give_the_same_rows(nano: dict[str, list[str]], tmp_path: Path) -> None:
    plain = RootTableDataModule(spec_with(nano), step_size=700, progress=False)
    x0, y0 = rows_of(plain, "val")
    workers = RootTableDataModule(spec_with(nano), step_size=700, num_workers=2, progress=False)
    x1, y1 = rows_of(workers, "val")
    key = lambda x, y: np.lexsort(np.column_stack([x, y]).T)  # noqa: E731  compare as sets of rows
    assert np.allclose(x0[key(x0, y0)], x1[key(x1, y1)]) and len(workers.split_ids("val")) == len(x1)
    cached = RootTableDataModule(spec_with(nano), step_size=700, cache_dir=str(tmp_path), progress=False)
    x2, _ = rows_of(cached, "val")
    assert np.allclose(x0, x2)
    (directory,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (directory / "complete.json").is_file() and len(list(directory.glob("unit-*.parquet"))) == 12
    again = RootTableDataModule(spec_with(nano), step_size=700, cache_dir=str(tmp_path), progress=False)
    again.setup()
    assert again.stats["mean"] == cached.stats["mean"]
    changed = RootTableDataModule(spec_with(nano, selection="nJet >= 4"), step_size=700, cache_dir=str(tmp_path),
                                  progress=False)
    changed.setup()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_class_weights_are_normalised_per_class(nano: dict[str, list[str]]) -> None:
    dm = RootTableDataModule(spec_with(nano), progress=False)
    dm.setup()
    totals = np.zeros(2)
    for x, y, w in dm.split_loader("train"):
        totals += np.bincount(y.numpy(), weights=w.numpy(), minlength=2)
    assert totals[0] == pytest.approx(totals[1], rel=1e-4)


def test_deepsets_ignores_order_and_padding_of_the_jets() -> None:
    torch.manual_seed(0)
    layout = {"count_index": 1, "start": 2, "length": 4, "fields": 3, "count_mean": 0.0, "count_std": 1.0}
    net = DeepSets(in_features=14, out_features=1, set_layout=layout).eval()
    x = torch.randn(5, 14)
    x[:, 1] = 3  # three jets: slot 4 is padding
    swapped = x.clone()
    swapped[:, 2:5], swapped[:, 5:8] = x[:, 5:8], x[:, 2:5]
    padded = x.clone()
    padded[:, 11:14] = 99.0
    with torch.no_grad():
        assert torch.allclose(net(x), net(swapped), atol=1e-5)
        assert torch.allclose(net(x), net(padded), atol=1e-5)
        fewer = x.clone()
        fewer[:, 1] = 2
        assert not torch.allclose(net(x), net(fewer))


def test_spec_errors_reach_the_command_line_as_one_line(nano: dict[str, list[str]], tmp_path: Path) -> None:
    from tests.conftest import run_cmsdl

    proc = run_cmsdl("train", "experiment=top_sb", f"data.spec.files.ttbar=[{nano['sig'][0]}]",
                     f"data.spec.files.qcd=[{nano['bkg'][0]}]", "data.spec.flat=[MET_ptx]",
                     f"paths.log_dir={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "has no branch 'MET_ptx'; closest: MET_pt" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def _rank_batches(rank: int, world: int, port: int, spec: dict, out: str) -> None:
    """One DDP rank (gloo): the number of training batches it gets and the ids of its validation rows."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    dm = RootTableDataModule(spec, step_size=400, batch_size=100, progress=False)
    dm.setup()
    n_batches = sum(1 for _ in dm.train_dataloader())
    ids = [i for batch in dm._loader("train", shuffle=False, ids=True) for i in batch]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"batches": n_batches, "ids": ids}))
    dist.destroy_process_group()


def test_ddp_ranks_read_disjoint_units_and_get_equal_batches(nano: dict[str, list[str]], tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_batches, args=(2, port, spec_with(nano), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["batches"] == ranks[1]["batches"] > 0
    assert not set(ranks[0]["ids"]) & set(ranks[1]["ids"])


@pytest.mark.parametrize("presorted", [True, False])
def test_collection_slots_match_a_sort_and_pad_reference(presorted: bool) -> None:
    from cmsdl.features.root_table.read import fill_collection
    from cmsdl.features.root_table.spec import Collection

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 7, 400)
    pt = ak.unflatten(rng.exponential(30, counts.sum()).astype(np.float32), counts)
    if presorted:
        pt = pt[ak.argsort(pt, axis=1, ascending=False)]
    eta = pt * 0.01 - 1
    collection = Collection("jet", {"pt": "Jet_pt", "eta": "Jet_eta"}, length=4, sort_by="pt", pad=-9.0)
    out = np.zeros((400, 9), np.float32)
    fill_collection(collection, {"Jet_pt": pt, "Jet_eta": eta}, "f.root", out)
    order = ak.argsort(pt, axis=1, ascending=False, stable=True)
    reference = [ak.to_numpy(ak.fill_none(ak.pad_none(v[order], 4, axis=1, clip=True), -9.0)) for v in (pt, eta)]
    assert np.array_equal(out[:, 0], counts)
    assert np.array_equal(out[:, 1:].reshape(400, 4, 2), np.stack(reference, axis=2).astype(np.float32))


def test_rntuple_files_read_like_ttrees(tmp_path: Path) -> None:
    """uproot (and ROOT 6.34+ NanoAOD) writes RNTuples: the same spec reads them, nested names included."""
    rng = np.random.default_rng(5)
    for name in ("sig", "bkg"):
        counts = rng.integers(0, 6, 800)
        jets = ak.zip({"pt": ak.unflatten(rng.exponential(30, counts.sum()).astype(np.float32), counts)})
        with uproot.recreate(tmp_path / f"{name}.root") as f:
            f["Events"] = {"Jet": jets, "MET_pt": rng.exponential(30, 800).astype(np.float32)}
    spec = {"tree": "Events", "files": {"sig": [str(tmp_path / "sig.root")], "bkg": [str(tmp_path / "bkg.root")]},
            "flat": ["MET_pt"], "collections": {"jet": {"fields": {"pt": "Jet.pt"}, "sort_by": "pt", "length": 3}},
            "derived": {"HT": "sum(jet_pt)"}, "aliases": {"jet_pt": "Jet.pt"}}
    dm = RootTableDataModule(spec, progress=False)
    x, y = rows_of(dm, "train")
    assert x.shape[1] == 6 and set(np.unique(y)) == {0, 1}
    assert len(dm.split_ids("train")) + len(dm.split_ids("val")) + len(dm.split_ids("test")) == 1600


def write_delphes_like(path: Path, n: int, rng: np.random.Generator) -> None:
    """Delphes' layout as uproot writes it: `Jet_size` and `Jet.PT` at the top (real Delphes files hold `Jet.PT` as
    the subbranch `Jet/Jet.PT`; uproot cannot write split branches), a flat branch with a '/' in its name."""
    counts = rng.integers(0, 6, n)
    jets = ak.zip({"PT": ak.unflatten(rng.exponential(30, counts.sum()).astype(np.float32), counts)})
    with uproot.recreate(path) as f:
        tree = f.mktree("Delphes", {"Jet": jets.type.content, "MET/MET": np.float32},
                        counter_name=lambda c: f"{c}_size", field_name=lambda outer, inner: f"{outer}.{inner}")
        tree.extend({"Jet": jets, "MET/MET": rng.exponential(30, n).astype(np.float32)})


def test_branches_named_by_their_full_path(tmp_path: Path) -> None:
    """A spec may name a branch by its full path (`Jet/Jet.PT`, as ROOT's TBrowser shows Delphes files) or with a '/'
    in its own name: found as hits2png finds them (cmsdl.io.root.resolve_branch and branch_array)."""
    rng = np.random.default_rng(7)
    files = {}
    for name in ("sig", "bkg"):
        write_delphes_like(tmp_path / f"{name}.root", 600, rng)
        files[name] = [str(tmp_path / f"{name}.root")]
    spec = {"tree": "Delphes", "files": files, "flat": {"met": "MET/MET"},
            "collections": {"jet": {"fields": {"pt": "Jet/Jet.PT"}, "sort_by": "pt", "length": 2}},
            "derived": {"HT": "sum(jet_pt)"}, "selection": "n >= 0", "aliases": {"jet_pt": "Jet/Jet.PT", "n": "Jet_size"}}
    dm = RootTableDataModule(spec, standardize=False, progress=False)
    x, y = rows_of(dm, "train")
    with uproot.open(files["sig"][0]) as f:
        met, pt = f["Delphes"]["MET/MET"].array(library="np"), f["Delphes"]["Jet.PT"].array()
    ids = np.array([int(i.rsplit(":", 1)[1]) for i in dm.split_ids("train") if i.startswith(files["sig"][0] + ":")])
    assert dm.feature_names == ["met", "HT", "jet_n", "jet1_pt", "jet2_pt"]
    assert np.allclose(np.sort(x[y == 0, 0]), np.sort(met[ids]))
    assert np.allclose(np.sort(x[y == 0, 1]), np.sort(ak.to_numpy(ak.sum(pt[ids], axis=1))), rtol=1e-5)


def test_read_ahead_keeps_order_raises_errors_and_stops_early() -> None:
    """The background reader gives the items in order, raises the reader's own error, and stops (closing the reader)
    when the consumer stops."""
    import threading
    import time

    from cmsdl.features.root_table.read import read_ahead

    closed = threading.Event()

    def units(fail_at: int | None = None):
        try:
            for i in range(50):
                if i == fail_at:
                    raise InputFormatError(f"f.root: cannot read unit {i}")
                yield i
        finally:
            closed.set()

    assert list(read_ahead(units())) == list(range(50))
    with pytest.raises(InputFormatError, match="cannot read unit 3"):
        list(read_ahead(units(fail_at=3)))
    closed.clear()
    produced = []

    def counted():
        for i in units():
            produced.append(i)
            yield i

    stream = read_ahead(counted())
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(produced) <= 2  # the consumer's item and the next one: memory stays bounded by two units
    stream.close()
    assert closed.wait(5)
