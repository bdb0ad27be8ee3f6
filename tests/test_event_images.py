"""EventImageDataModule, the ResNets and the event experiments, on a real (tiny) hits2png output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from cmsdl.config import compose_run_config, config_dir
from cmsdl.data.images import EventImageDataModule
from cmsdl.errors import CmsdlError
from cmsdl.sim.tracker import simulate_events, write_root
from cmsdl.models.resnet import ResNet
from cmsdl.train import complete_model_config
from conftest import run_cmsdl

EVENT_EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("event_*.yaml"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 events per process rendered at 16 px in two channels (xy, rz); returns the manifest."""
    root = tmp_path_factory.mktemp("events")
    (root / "raw").mkdir()
    for k, process in enumerate(("jpsi", "qcd", "higgs")):
        write_root(root / "raw" / f"{process}_000.root", simulate_events(process, 30, k), 0)
    run_cmsdl("hits2png", "input=raw/*.root", "out=img", "size=16", "projection=[xy,rz]", "progress=false", cwd=root)
    return root / "img" / "manifest.csv"


def test_split_and_decoded_cache_are_written_once_and_reused(images: Path, tmp_path: Path) -> None:
    dm = EventImageDataModule(str(images), classes=["qcd", "jpsi"], cache_dir=str(tmp_path), progress=False, seed=3)
    dm.setup()
    cache, split = sorted(tmp_path.glob("images-*.npy")), sorted(tmp_path.glob("split-*.json"))
    assert len(cache) == 1 and len(split) == 1
    stamps = [cache[0].stat().st_mtime_ns, split[0].stat().st_mtime_ns]
    again = EventImageDataModule(str(images), classes=["qcd", "jpsi"], cache_dir=str(tmp_path), progress=False, seed=3)
    again.setup()
    assert [cache[0].stat().st_mtime_ns, split[0].stat().st_mtime_ns] == stamps
    assert {s: r.tolist() for s, r in again.split_rows.items()} == {s: r.tolist() for s, r in dm.split_rows.items()}
    assert dm.class_names == ["qcd", "jpsi"] and dm.net_inputs() == {"in_channels": 2}
    assert sorted(np.bincount(dm.labels[dm.split_rows["test"]]).tolist()) == [4, 5]
    x, y = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (2, 16, 16) and set(y.tolist()) <= {0, 1}
    first = json.loads(json.dumps(dm.preprocessing()))
    assert first["kind"] == "image" and first["shape"] == [2, 16, 16] and first["channels"] == ["xy", "rz"]


def test_batches_hold_the_decoded_pngs_of_their_rows(images: Path, tmp_path: Path) -> None:
    from cmsdl.features.images.png import decode_png

    dm = EventImageDataModule(str(images), cache_dir=str(tmp_path), progress=False, eval_batch_size=7)
    x, _ = next(iter(dm.split_loader("test")))
    paths = dm.split_ids("test")[:7]
    assert all(torch.equal(x[i], torch.from_numpy(decode_png(images.parent / p, 2))) for i, p in enumerate(paths))


def test_training_flips_only_mirror_axes_that_are_detector_symmetries(images: Path, tmp_path: Path) -> None:
    root = images.parent.parent
    run_cmsdl("hits2png", "input=raw/*.root", "out=img_phi_rho", "size=16", "projection=[phi-rho,rz]",
              "progress=false", cwd=root)
    unrolled = EventImageDataModule(str(root / "img_phi_rho" / "manifest.csv"), cache_dir=str(tmp_path / "a"),
                                    progress=False)
    assert EventImageDataModule(str(images), cache_dir=str(tmp_path / "b"), progress=False).flip_dims() == (2, 3)
    assert unrolled.flip_dims() == (3,)  # phi mirrors; the radius does not run backwards
    plain, augmented = unrolled.dataset("train"), unrolled.dataset("train", augment=True)
    batch = list(range(len(plain)))
    x, flipped = plain[batch][0], augmented[batch][0]
    mirrored = np.array([torch.equal(a, b.flip(2)) and not torch.equal(a, b) for a, b in zip(x, flipped)])
    assert 0 < mirrored.sum() < len(batch)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(2)) for a, b in zip(x, flipped))


def test_unknown_class_is_one_clear_error(images: Path, tmp_path: Path) -> None:
    with pytest.raises(CmsdlError, match="has classes jpsi, qcd, higgs"):
        EventImageDataModule(str(images), classes=["jpsi", "ttbar"], cache_dir=str(tmp_path)).setup()


@pytest.mark.parametrize("kwargs", [{"arch": "resnet34"}, {"arch": "resnet50"},
                                    {"arch": "resnet50", "stem": "small", "dropout": 0.3}])
def test_resnets_take_uint8_images_of_any_channel_count(kwargs: dict) -> None:
    net = ResNet(in_channels=2, out_features=3, **kwargs).eval()
    x = torch.randint(0, 256, (2, 2, 32, 32), dtype=torch.uint8)
    assert net(x).shape == (2, 3)
    assert torch.allclose(net(x), net(x.float() / 255), atol=1e-5)


def test_cpu_bf16_autocast_switches_to_channels_last_with_the_same_logits() -> None:
    net = ResNet(in_channels=2, out_features=3, arch="resnet34").eval()
    x = torch.randint(0, 256, (2, 2, 32, 32), dtype=torch.uint8)
    fp32 = net(x)
    assert not net.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = net(x)
    assert net.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(bf16.float(), fp32, atol=0.1, rtol=0.05)


def test_local_weights_are_loaded_and_missing_ones_rejected(tmp_path: Path) -> None:
    source = ResNet(in_channels=3, out_features=5, arch="resnet34")
    path = tmp_path / "weights.pt"
    torch.save(source.body.state_dict(), path)
    net = ResNet(in_channels=3, out_features=2, arch="resnet34", weights=str(path))
    assert torch.equal(net.body.layer1[0].conv1.weight, source.body.layer1[0].conv1.weight)
    with pytest.raises(CmsdlError, match="local files only"):
        ResNet(in_channels=1, out_features=2, weights=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("experiment", EVENT_EXPERIMENTS)
@pytest.mark.parametrize("model", ["resnet34", "resnet50_modified"])
def test_event_experiments_build(experiment: str, model: str, images: Path, tmp_path: Path) -> None:
    cfg = compose_run_config("train", [f"experiment={experiment}", f"model={model}", "trainer=cpu",
                                       f"data.manifest={images}", f"data.cache_dir={tmp_path}", "data.progress=false",
                                       f"paths.log_dir={tmp_path / 'logs'}"], output_dir=tmp_path / "run")
    try:
        dm = instantiate(cfg.data)
        dm.setup("fit")
        complete_model_config(cfg, dm)
        model_obj = instantiate(cfg.model)
        x, y = next(iter(dm.train_dataloader()))
        assert model_obj(x[:2]).shape[0] == 2 and len(dm.class_names) == len(cfg.data.classes)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.slow
def test_train_and_eval_print_the_seed_table_cells(images: Path, tmp_path: Path) -> None:
    run_cmsdl("train", "experiment=event_jpsi_vs_qcd", f"data.manifest={images}", f"paths.log_dir={tmp_path}",
              "run_name=t", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "data.batch_size=8", "callbacks.progress_bar.refresh_rate=0", "data.progress=false", cwd=tmp_path)
    summary = json.loads((tmp_path / "train" / "runs" / "t" / "metrics.json").read_text())
    proc = run_cmsdl("eval", f"ckpt={summary['best_checkpoint']}", f"paths.log_dir={tmp_path}", "run_name=e", cwd=tmp_path)
    assert "test: accuracy and confusion matrix (rows true, columns predicted: jpsi, qcd): " in proc.stdout
    assert (tmp_path / "eval" / "runs" / "e" / "confusion.png").is_file()
    metrics = json.loads((tmp_path / "eval" / "runs" / "e" / "metrics.json").read_text())
    assert metrics["class_names"] == ["jpsi", "qcd"] and metrics["n"] == 9
