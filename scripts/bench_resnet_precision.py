"""ResNet training throughput: fp32 vs bf16 autocast + channels_last, side by side on one device.

Times whole training steps (forward, loss, backward, Adam step) of the event-image ResNets on sparse uint8 images
like hits2png's, on CUDA when there is one, else on the CPU (bf16 pays on CPUs with AMX/AVX512-BF16).

    python scripts/bench_resnet_precision.py --arch resnet50 --size 64 --batch-size 128
    python scripts/bench_resnet_precision.py --modified --size 32 --compile
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_all import bench_line
from cmsdl.models.resnet import ResNet


def sparse_images(n: int, channels: int, size: int, occupancy: float, device: torch.device) -> torch.Tensor:
    """uint8 images with about `occupancy` of their pixels lit, as hits2png writes them."""
    lit = torch.rand(n, channels, size, size, device=device) < occupancy
    values = torch.randint(100, 256, lit.shape, device=device, dtype=torch.uint8)
    return torch.where(lit, values, torch.zeros_like(values))


def train_rate(args: argparse.Namespace, device: torch.device, fast: bool) -> float:
    """Images per second of training steps, fp32 (fast=False) or bf16 autocast + channels_last (fast=True)."""
    torch.manual_seed(0)
    net = ResNet(args.channels, args.classes, arch=args.arch, stem="small" if args.modified else "imagenet",
                 dropout=0.3 if args.modified else 0.0, channels_last=fast, compile=args.compile).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4)
    x = sparse_images(args.batch_size, args.channels, args.size, args.occupancy, device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--arch", default="resnet50", help="resnet18 | resnet34 | resnet50 | resnet101")
    parser.add_argument("--modified", action="store_true", help="the resnet50_modified stem (3x3, stride 1) and head")
    parser.add_argument("--size", type=int, default=64, help="image size (hits2png's default: 64)")
    parser.add_argument("--channels", type=int, default=2, help="image channels (xy + rz: 2)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 64 on the CPU")
    parser.add_argument("--occupancy", type=float, default=0.05, help="fraction of lit pixels")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 5 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network on both sides")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.small:
        args.arch, args.size, args.batch_size, args.steps, args.warmup = "resnet18", 32, 32, 3, 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (256 if on_gpu else 64)
    args.steps = args.steps or (50 if on_gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2) + (5 if args.compile else 0)
    name = f"{args.arch}{' modified' if args.modified else ''}"
    where = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    fp32 = train_rate(args, device, fast=False)
    fast = train_rate(args, device, fast=True)
    print(f"{name}, {args.channels} x {args.size} x {args.size} images, batch {args.batch_size}, {where}"
          f"{', torch.compile' if args.compile else ''}")
    print(f"fp32:                    {fp32:10.0f} images/s (training steps)")
    print(f"bf16 + channels_last:    {fast:10.0f} images/s")
    print(f"ratio:                   {fast / fp32:10.2f}x")
    print(bench_line(f"ResNet training: bf16 + channels_last vs fp32, {name} {args.size} px, {where}", fast, fp32, "",
                     "images/s"))
    if args.json:
        args.json.write_text(json.dumps({"model": name, "device": where, "size": args.size, "channels": args.channels,
                                         "batch_size": args.batch_size, "compile": args.compile,
                                         "fp32_images_per_s": fp32, "bf16_channels_last_images_per_s": fast,
                                         "ratio": fast / fp32}, indent=2))


if __name__ == "__main__":
    main()
