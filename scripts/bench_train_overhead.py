"""Training overhead: the same network and steps by a raw PyTorch loop, a bare LightningModule and `cmsdl train`.

Two workloads, each run by the three sides from the same initial weights, single process, on the CPU (or
`--device cuda`):

* the seed's MLP (5 x 75) on simulated workflows (`experiment=workflow_actions`): cmsdl's own DataModule and its
  default callbacks and logger (best + last checkpoints, early stopping, progress bar, CSV metrics);
* a ResNet34 step on 2 x 64 x 64 uint8 images (`model=resnet34`), images in memory on all three sides (the PNG
  loader has its own benchmark, bench_image_loader.py), so that the framework's own costs show.

Raw: shuffle, slice batches, optimiser step, one no-grad validation pass per epoch. Bare Lightning: a
LightningModule with the same loss and optimiser, no callbacks, logger, metrics or checkpoints, fed the raw
loop's batches. cmsdl: `cmsdl.train.build` with the run's config (overrides after `--` go to both workloads).
Prints samples/s of each side, the ratios, the CPU seconds of each side (`time.process_time`, which a busy
machine moves much less than the wall clock), the load average, and one `BENCH {json}` line per goal
(see scripts/bench_all.py, wall clock): MLP cmsdl / bare Lightning >= 0.95, ResNet34 cmsdl / raw >= 0.95.

    python scripts/bench_train_overhead.py [--small] [--workflows 20000] [--epochs 10] [--batch-size 256]
        [--resnet-images 512] [--resnet-epochs 2] [--resnet-batch 64] [--only mlp|resnet] [-- override ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_all import bench_line  # noqa: E402
from cmsdl.config import compose_run_config  # noqa: E402
from cmsdl.sim.workflows import simulate_workflows  # noqa: E402
from cmsdl.train import build  # noqa: E402

GOAL_VS_BARE = 0.95
GOAL_RESNET_VS_RAW = 0.95
IMAGE_CLASSES = ("jpsi", "qcd")


class Batches(IterableDataset):
    """The raw loop's batches (a fresh permutation per pass) as a dataset, for Lightning and for DataLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y)) if self.shuffle else torch.arange(len(self.y))
        for rows in order.split(self.batch_size):
            yield self.x[rows], self.y[rows]

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    return DataLoader(Batches(x, y, batch_size, shuffle), batch_size=None)



def bce(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(net(x).reshape(-1), y.float())


class Clock:
    """Wall-clock and CPU seconds (this process, all its threads) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def raw_loop(net: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
             epochs: int, batch_size: int, optimizer: Callable[..., torch.optim.Optimizer],
             device: str) -> tuple[float, float]:
    """Plain PyTorch: shuffle, slice batches, optimiser step, one no-grad validation pass per epoch; (wall, CPU) s."""
    net = net.to(device)
    x, y = (t.to(device) for t in train)
    xv, yv = (t.to(device) for t in val)
    opt = optimizer(params=net.parameters())
    clock = Clock()
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(y), device=device).split(batch_size):
            loss = bce(net, x[rows], y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for rows in torch.arange(len(yv), device=device).split(batch_size):
                bce(net, xv[rows], yv[rows]).item()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock.seconds()


class BareModule(pl.LightningModule):
    """The smallest LightningModule for the same step: loss, optimiser; no metrics, no logging."""

    def __init__(self, net: torch.nn.Module, optimizer: Callable[..., torch.optim.Optimizer]) -> None:
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return bce(self.net, *batch)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        bce(self.net, *batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())


def bare_lightning(net: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                   val: tuple[torch.Tensor, torch.Tensor], epochs: int, batch_size: int,
                   optimizer: Callable[..., torch.optim.Optimizer], device: str) -> tuple[float, float]:
    """A bare LightningModule and Trainer (no callbacks, logger, checkpoints, summary, progress bar); (wall, CPU) s."""
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=epochs,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[])
    clock = Clock()
    trainer.fit(BareModule(net, optimizer), loader(*train, batch_size, True), loader(*val, batch_size, False))
    return clock.seconds()


def cmsdl_fit(cfg: Any) -> tuple[tuple[float, float], Any, Any]:
    """`cmsdl train`'s datamodule, model and trainer built from `cfg`, fitted; ((wall, CPU) s, datamodule, net)."""
    datamodule, model, trainer = build(cfg)
    initial = copy.deepcopy(model.net)
    clock = Clock()
    trainer.fit(model, datamodule=datamodule)
    return clock.seconds(), datamodule, initial


class TensorImages(pl.LightningDataModule):
    """uint8 images held in memory, served like cmsdl's DataModules (the protocol build() uses)."""

    task = "classification"
    class_names = list(IMAGE_CLASSES)

    def __init__(self, n_images: int, size: int, batch_size: int, seed: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        lit = torch.rand(n_images, 2, size, size, generator=generator) < 0.05
        self.x = (lit * torch.randint(1, 256, lit.shape, generator=generator)).to(torch.uint8)
        self.y = torch.randint(0, 2, (n_images,), generator=generator)
        self.batch_size = batch_size
        cut = n_images * 4 // 5
        self.splits = {"train": (self.x[:cut], self.y[:cut]), "val": (self.x[cut:], self.y[cut:])}

    def net_inputs(self) -> dict[str, int]:
        return {"in_channels": 2}

    def preprocessing(self) -> dict[str, Any]:
        return {"kind": "image", "class_names": self.class_names, "shape": list(self.x.shape[1:]), "dtype": "uint8",
                "scale": 1 / 255}

    def train_dataloader(self) -> DataLoader:
        return loader(*self.splits["train"], self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return loader(*self.splits["val"], self.batch_size, False)


def compose(tmp: str, device: str, overrides: list[str]) -> Any:
    return compose_run_config("train", [f"trainer={'gpu' if device == 'cuda' else 'cpu'}", f"paths.log_dir={tmp}",
                                        *overrides], output_dir=Path(tmp) / "run")


def mlp_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Raw, bare Lightning and cmsdl samples/s for the seed's MLP on simulated workflows."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "workflows.json"
        data.write_text(json.dumps(simulate_workflows(args.workflows, seed=11)))
        cfg = compose(tmp, args.device, [
            "experiment=workflow_actions", f"data.source.path={data}", f"data.batch_size={args.batch_size}",
            f"trainer.max_epochs={args.epochs}", f"trainer.min_epochs={args.epochs}",
            "callbacks.early_stopping.patience=100000", *args.overrides])
        cmsdl_s, datamodule, initial = cmsdl_fit(cfg)
        train, val = datamodule.splits["train"], datamodule.splits["val"]
        optimizer = build_optimizer(cfg)
        both = ((train.features, train.labels), (val.features, val.labels))
        bare_s = bare_lightning(copy.deepcopy(initial), *both, args.epochs, args.batch_size, optimizer, args.device)
        raw_s = raw_loop(copy.deepcopy(initial), *both, args.epochs, args.batch_size, optimizer, args.device)
    return figures("MLP 5x75", args.epochs * len(train), raw_s, bare_s, cmsdl_s,
                   f"{len(train)} workflows x {train.features.shape[1]} features, batch {args.batch_size}, "
                   f"{args.epochs} epochs")


def resnet_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Raw, bare Lightning and cmsdl images/s for a ResNet34 step on 2 x 64 x 64 uint8 images held in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(tmp, args.device, [
            "experiment=event_jpsi_vs_qcd", "model=resnet34", "data._target_=bench_train_overhead.TensorImages",
            f"+data.n_images={args.resnet_images}", f"+data.size={args.image_size}",
            f"data.batch_size={args.resnet_batch}", f"trainer.max_epochs={args.resnet_epochs}",
            f"trainer.min_epochs={args.resnet_epochs}", "callbacks.early_stopping.patience=100000", *args.overrides])
        cfg.data = {key: cfg.data[key] for key in ("_target_", "n_images", "size", "batch_size")}
        datamodule = TensorImages(args.resnet_images, args.image_size, args.resnet_batch)
        train, val = datamodule.splits["train"], datamodule.splits["val"]
        epochs, batch = args.resnet_epochs, args.resnet_batch
        optimizer = build_optimizer(cfg)
        warm_up = [t[:2 * batch] for t in train]
        raw_loop(build(cfg)[1].net, warm_up, [t[:batch] for t in val], 1, batch, optimizer, args.device)
        cmsdl_s, _, initial = cmsdl_fit(cfg)
        bare_s = bare_lightning(copy.deepcopy(initial), train, val, epochs, batch, optimizer, args.device)
        raw_s = raw_loop(copy.deepcopy(initial), train, val, epochs, batch, optimizer, args.device)
    return figures("ResNet34 step", epochs * len(train[1]), raw_s, bare_s, cmsdl_s,
                   f"{len(train[1])} images 2 x {args.image_size} x {args.image_size} uint8, batch {batch}, "
                   f"{epochs} epochs")


def build_optimizer(cfg: Any) -> Callable[..., torch.optim.Optimizer]:
    from hydra.utils import instantiate

    return instantiate(cfg.model.optimizer)


def figures(name: str, samples: int, raw_s: tuple[float, float], bare_s: tuple[float, float],
            cmsdl_s: tuple[float, float], setting: str) -> dict[str, Any]:
    """One workload's row: wall seconds and samples/s, and CPU seconds, of each side."""
    sides = {"raw": raw_s, "bare": bare_s, "cmsdl": cmsdl_s}
    row: dict[str, Any] = {"name": name, "setting": setting, "samples": samples}
    for side, (wall, cpu) in sides.items():
        row |= {f"{side}_s": wall, f"{side}_cpu_s": cpu, f"{side}_per_s": samples / wall}
    return row


def print_table(rows: list[dict[str, Any]], device: str) -> None:
    load = os.getloadavg()
    print(f"\n{device}, {torch.get_num_threads()} threads, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'workload':15}{'raw /s':>12}{'bare PL /s':>12}{'cmsdl /s':>12}{'cmsdl/raw':>11}{'cmsdl/bare':>11}"
          f"{'bare/raw':>10}  setting")
    for r in rows:
        print(f"{r['name']:15}{r['raw_per_s']:>12,.0f}{r['bare_per_s']:>12,.0f}{r['cmsdl_per_s']:>12,.0f}"
              f"{r['cmsdl_per_s'] / r['raw_per_s']:>11.3f}{r['cmsdl_per_s'] / r['bare_per_s']:>11.3f}"
              f"{r['bare_per_s'] / r['raw_per_s']:>10.3f}  {r['setting']}")
    print(f"\n{'CPU seconds':15}{'raw':>12}{'bare PL':>12}{'cmsdl':>12}{'cmsdl/raw':>11}{'cmsdl/bare':>11}"
          f"{'bare/raw':>10}  (ratios of samples per CPU second)")
    for r in rows:
        raw, bare, ours = r["raw_cpu_s"], r["bare_cpu_s"], r["cmsdl_cpu_s"]
        print(f"{r['name']:15}{raw:>12.3f}{bare:>12.3f}{ours:>12.3f}{raw / ours:>11.3f}{bare / ours:>11.3f}"
              f"{raw / bare:>10.3f}")


def print_bench_lines(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["name"].startswith("MLP"):
            print(bench_line("train overhead: MLP, cmsdl vs bare Lightning", r["cmsdl_per_s"], r["bare_per_s"],
                             f">= {GOAL_VS_BARE}", "samples/s"))
        else:
            print(bench_line("train overhead: ResNet34 step, cmsdl vs raw PyTorch", r["cmsdl_per_s"],
                             r["raw_per_s"], f">= {GOAL_RESNET_VS_RAW}", "images/s"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--only", choices=["mlp", "resnet"])
    parser.add_argument("--workflows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resnet-images", type=int, default=640)
    parser.add_argument("--resnet-epochs", type=int, default=2)
    parser.add_argument("--resnet-batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (--small: 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra `cmsdl train` overrides, e.g. callbacks=none")
    args = parser.parse_args(argv)
    if args.small:
        args.workflows, args.epochs, args.resnet_images, args.resnet_epochs, args.threads = 20000, 3, 200, 1, 1
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    if args.only in (None, "mlp"):
        rows.append(mlp_figures(args))
    if args.only in (None, "resnet"):
        rows.append(resnet_figures(args))
    print_table(rows, args.device)
    print_bench_lines(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": os.getloadavg(), **vars(args) | {"json": None}},
                                        indent=2))


if __name__ == "__main__":
    main()
