"""ROOT tables end to end through the real command: a Delphes-like file format given only a spec config,
training, export, and `cmsdl predict` writing one score per input entry back into ROOT (or Parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from cmsdl.features.root_table.read import ReadUnit, read_unit
from cmsdl.inference import Predictor
from cmsdl.inference.scores import spec_of
from tests.conftest import run_cmsdl

DELPHES_SPEC = """\
_target_: cmsdl.data.root_table.RootTableDataModule
spec:
  tree: Delphes
  files: {files}
  classes: [background, signal]
  label: is_signal
  flat: {{met: MissingET.MET}}
  collections:
    jet: {{fields: {{pt: Jet.PT, eta: Jet.Eta, btag: Jet.BTag}}, sort_by: pt, length: 5, pad: 0.0}}
  derived: {{HT: sum(jet_pt), n_b: count(jet_btag > 0)}}
  selection: Jet_size >= 2
  aliases: {{jet_pt: Jet.PT, jet_btag: Jet.BTag}}
split: [0.6, 0.2, 0.2]
batch_size: 256
step_size: 1000
progress: false
seed: 1
"""


def write_delphes(path: Path, n: int, seed: int) -> None:
    """A Delphes-like tree: dotted branch names, a Jet_size counter, a label branch, MET as a scalar."""
    rng = np.random.default_rng(seed)
    signal = rng.random(n) < 0.5
    counts = rng.integers(1, 9, n) + 2 * signal
    total = int(counts.sum())
    owner = np.repeat(signal, counts)
    pt = (rng.exponential(30, total) + 20 + 25 * owner).astype(np.float32)
    btag = (rng.random(total) < np.where(owner, 0.4, 0.05)).astype(np.int32)
    data = {"Jet.PT": ak.unflatten(pt, counts), "Jet.Eta": ak.unflatten(rng.normal(0, 1.5, total).astype(np.float32), counts),
            "Jet.BTag": ak.unflatten(btag, counts), "Jet_size": counts.astype(np.int32),
            "MissingET.MET": rng.exponential(20, n).astype(np.float32), "is_signal": signal.astype(np.int32)}
    with uproot.recreate(path) as f:
        tree = f.mktree("Delphes", {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in data.items()})
        tree.extend(data)


@pytest.fixture(scope="module")
def delphes_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two Delphes-like files, a user config directory with their spec, a trained and exported MLP."""
    work = tmp_path_factory.mktemp("delphes")
    files = [work / f"delphes_{i}.root" for i in range(2)]
    for i, path in enumerate(files):
        write_delphes(path, 2500, seed=i)
    configs = work / "my_configs" / "data"
    configs.mkdir(parents=True)
    (configs / "delphes.yaml").write_text(DELPHES_SPEC.format(files=json.dumps([str(work / "delphes_*.root")])))
    run_cmsdl("train", "data=delphes", "model=mlp", f"hydra.searchpath=[file://{work / 'my_configs'}]", "trainer=cpu",
              "trainer.max_epochs=4", "run_name=d", f"paths.log_dir={work / 'logs'}",
              "callbacks.progress_bar.refresh_rate=0", cwd=work)
    summary = json.loads((work / "logs/train/runs/d/metrics.json").read_text())
    assert summary["metrics"]["test/auroc"] > 0.8
    run_cmsdl("eval", f"ckpt={summary['best_checkpoint']}", f"paths.log_dir={work / 'logs'}", "run_name=d", cwd=work)
    evaluated = json.loads((work / "logs/eval/runs/d/metrics.json").read_text())
    assert evaluated["auroc"] == pytest.approx(summary["metrics"]["test/auroc"], abs=1e-3)
    first = (work / "logs/eval/runs/d/predictions.csv").read_text().splitlines()[1]
    assert first.startswith(str(work / "delphes_0.root:"))
    run_cmsdl("export", f"ckpt={summary['best_checkpoint']}", f"out={work / 'delphes.onnx'}", cwd=work)
    return work / "delphes.onnx", files


def test_predict_writes_one_score_per_entry_in_input_order(delphes_model: tuple[Path, list[Path]], tmp_path: Path) -> None:
    model, files = delphes_model
    run_cmsdl("predict", f"model={model}", f"input={files[0].parent / 'delphes_*.root'}", f"out={tmp_path / 'scores'}",
              cwd=tmp_path)
    predictor = Predictor(model)
    spec = spec_of(predictor.preprocessing)
    for path in files:
        written = uproot.open(tmp_path / "scores" / f"{path.stem}_scores.root")
        assert written.classnames() == {"Scores;1": "TTree"}  # ROOT's AddFriend needs a TTree
        scores = written["Scores"].arrays(library="np")
        events = uproot.open(path)["Delphes"]
        assert len(scores["score_signal"]) == events.num_entries
        expected = predictor.run(predictor.scale(read_unit(spec, ReadUnit(str(path), -1, 0, events.num_entries)).features))
        assert np.allclose(scores["score_signal"], expected.outputs[:, 1], atol=1e-6)
        assert np.array_equal(scores["selected"], events["Jet_size"].array(library="np") >= 2)
        assert np.allclose(scores["score_signal"] + scores["score_background"], 1, atol=1e-5)


def test_predict_parquet_and_a_bad_file_is_reported_and_skipped(delphes_model: tuple[Path, list[Path]],
                                                                tmp_path: Path) -> None:
    model, files = delphes_model
    broken = tmp_path / "broken.root"
    broken.write_bytes(files[0].read_bytes()[:3000])
    proc = run_cmsdl("predict", f"model={model}", f"input=[{files[1]},{broken}]", f"out={tmp_path / 'pq'}",
                     "format=parquet", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "1 input file(s) failed" in proc.stdout and "broken.root" in proc.stdout
    table = pq.read_table(tmp_path / "pq" / f"{files[1].stem}_scores.parquet")
    assert table.column("entry").to_pylist() == list(range(2500))
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [f"{files[1].stem}_scores.parquet"]
