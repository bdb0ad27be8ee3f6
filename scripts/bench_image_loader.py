"""Image loading speed: decoding the PNG files every epoch vs reading the uint8 cache of EventImageDataModule.

Both sides serve the same batches (same rows, same batch size, uint8 tensors) from one hits2png output.

    python scripts/bench_image_loader.py --events 1000 --size 64 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from bench_all import bench_line
from cmsdl.data.images import EventImageDataModule
from cmsdl.features.images.png import decode_png


class PngBatches(Dataset):
    """The plain way: open and decode every PNG of a batch, every time."""

    def __init__(self, root: Path, paths: list[str], channels: int) -> None:
        self.root, self.paths, self.channels = root, paths, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([decode_png(self.root / self.paths[i], self.channels) for i in rows]))


def images_per_s(loader, epochs: int) -> float:
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--events", type=int, default=1000, help="events per process (jpsi, qcd)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.small:
        args.events = 200
    with tempfile.TemporaryDirectory() as tmp:
        cmsdl = [sys.executable, "-m", "cmsdl.cli"]
        subprocess.run([*cmsdl, "simulate", "out=raw", f"n_events={args.events}", "processes=[jpsi,qcd]",
                        "progress=false"], cwd=tmp, check=True, capture_output=True)
        subprocess.run([*cmsdl, "hits2png", "input=raw/*.root", "out=img", f"size={args.size}", "projection=[xy,rz]",
                        "progress=false"], cwd=tmp, check=True, capture_output=True)
        dm = EventImageDataModule(f"{tmp}/img/manifest.csv", eval_batch_size=args.batch_size, num_workers=0,
                                  progress=False)
        start = time.perf_counter()
        dm.setup()
        build_s = time.perf_counter() - start
        rows = dm.split_ids("train")
        png = DataLoader(PngBatches(Path(tmp) / "img", rows, 2), batch_size=None,
                         sampler=BatchSampler(SequentialSampler(range(len(rows))), args.batch_size, drop_last=False))
        png_rate = images_per_s(png, args.epochs)
        cache_rate = images_per_s(dm.split_loader("train"), args.epochs)
    figures = {"images": len(rows), "size": args.size, "channels": 2, "png_images_per_s": png_rate,
               "cache_images_per_s": cache_rate, "ratio": cache_rate / png_rate, "cache_build_s": build_s}
    print(f"{len(rows)} images of 2 x {args.size} x {args.size}, batch {args.batch_size}, {args.epochs} epochs")
    print(f"decode PNG files every epoch: {png_rate:10.0f} images/s")
    print(f"uint8 cache (decoded once):   {cache_rate:10.0f} images/s   (building the cache took {build_s:.1f} s, once)")
    print(f"ratio cache/PNG:              {figures['ratio']:10.1f}x")
    print(bench_line("image loader: uint8 cache vs decoding PNGs", cache_rate, png_rate, "", "images/s"))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
