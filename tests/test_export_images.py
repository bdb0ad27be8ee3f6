"""Image models ship too: ResNets export with uint8 pixel input, match PyTorch, and the predictor takes PNGs or hits."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot

from cmsdl.checkpoint import load_checkpoint, restore
from cmsdl.export.exporter import InferenceGraph
from cmsdl.sim.tracker import simulate_events, write_root
from cmsdl.inference import Predictor
from conftest import run_cmsdl


@pytest.fixture(scope="module")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 events per process rendered at 24 px in two channels (xy, rz); returns the work directory."""
    root = tmp_path_factory.mktemp("export_images")
    (root / "raw").mkdir()
    for k, process in enumerate(("jpsi", "qcd", "higgs")):
        write_root(root / "raw" / f"{process}_000.root", simulate_events(process, 20, 10 + k), 0)
    run_cmsdl("hits2png", "input=raw/*.root", "out=img", "size=24", "projection=[xy,rz]", "progress=false",
              cwd=root)
    return root


def train_and_export(root: Path, model: str) -> tuple[Path, Path]:
    run_cmsdl("train", "experiment=event_3class", f"model={model}", f"data.manifest={root / 'img' / 'manifest.csv'}",
              f"paths.log_dir={root / 'logs'}", f"run_name={model}", "trainer=cpu", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "data.batch_size=8", "callbacks.progress_bar.refresh_rate=0",
              "data.progress=false", cwd=root)
    summary = json.loads((root / "logs" / "train" / "runs" / model / "metrics.json").read_text())
    out = root / f"{model}.onnx"
    with png_folder_away(root / "img"):  # the checkpoint carries its parity samples
        run_cmsdl("export", f"ckpt={summary['best_checkpoint']}", f"out={out}", "parity.samples=16", cwd=root)
    return Path(summary["best_checkpoint"]), out


@contextmanager
def png_folder_away(folder: Path) -> Iterator[None]:
    """Run a block with the PNG folder (images, manifest, decoded cache) unreadable at its path."""
    away = folder.with_name(f"{folder.name}.away")
    folder.rename(away)
    try:
        yield
    finally:
        away.rename(folder)


def check_family(root: Path, model: str) -> None:
    ckpt, onnx_file = train_and_export(root, model)
    predictor = Predictor(onnx_file)
    spec = predictor.contract.input
    assert spec.name == "images" and spec.dtype == "uint8" and spec.shape == ["batch", 2, 24, 24]
    assert predictor.contract.preprocessing_in_graph, "raw uint8 pixels in: the graph scales them"
    assert predictor.contract.class_names == ["higgs", "jpsi", "qcd"]
    checkpoint = load_checkpoint(ckpt)
    datamodule, net = restore(checkpoint)
    x = torch.cat([b[0] for b in datamodule.split_loader("test")])
    stored = checkpoint["cmsdl"]["parity_inputs"]
    assert stored.dtype == torch.uint8 and torch.equal(stored, x[:64]), "the parity samples are test images"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for size in (1, 7, len(x)):
        with torch.no_grad():
            expected = InferenceGraph(net).eval()(x[:size]).numpy()
        got = session.run(None, {"images": x[:size].numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_resnet34_exports_and_matches_pytorch(image_set: Path) -> None:
    check_family(image_set, "resnet34")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "resnet50_modified"])
def test_resnet50_families_export_and_match_pytorch(image_set: Path, model: str) -> None:
    check_family(image_set, model)


@pytest.mark.slow
def test_export_as_the_readme_writes_it_with_the_png_folder_deleted(image_set: Path, tmp_path: Path) -> None:
    shutil.copytree(image_set / "img", tmp_path / "img", ignore=shutil.ignore_patterns(".cache"))
    run_cmsdl("train", "experiment=event_3class", "model=resnet34", "data.manifest=img/manifest.csv",
              "paths.log_dir=logs", "run_name=ev1", "trainer=cpu", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "data.batch_size=8", "callbacks.progress_bar.refresh_rate=0",
              "data.progress=false", cwd=tmp_path)
    shutil.rmtree(tmp_path / "img")
    (tmp_path / "models").mkdir()
    proc = run_cmsdl("export", "ckpt=logs/train/runs/ev1", "out=models/event_3class.onnx", cwd=tmp_path)
    assert "no parity samples" not in proc.stdout
    report = json.loads((tmp_path / "models" / "event_3class.export.json").read_text())
    assert report["contract"]["cmsdl.inputs"][0]["dtype"] == "uint8"
    assert max(report["parity"]["max_abs_diff"].values()) <= 1e-4


def test_predictor_takes_pngs_and_raw_hits_alike(image_set: Path) -> None:
    onnx_file = image_set / "resnet34.onnx"
    if not onnx_file.exists():
        train_and_export(image_set, "resnet34")
    predictor = Predictor(onnx_file)
    rows = list(csv.DictReader((image_set / "img" / "manifest.csv").open()))[:4]
    pngs = [image_set / "img" / row["path"] for row in rows]
    from_png = predictor.predict_images(pngs)
    events = []
    for row in rows:
        tree = uproot.open(image_set / row["file"])["events"]
        arrays = tree.arrays(["hit_x", "hit_y", "hit_z"], entry_start=int(row["entry"]),
                             entry_stop=int(row["entry"]) + 1, library="np")
        events.append({axis: arrays[f"hit_{axis}"][0].tolist() for axis in ("x", "y", "z")})
    from_hits = predictor.predict_hits(events)
    np.testing.assert_allclose(from_hits.probabilities, from_png.probabilities, atol=1e-6)
    assert from_png.labels == from_hits.labels
