"""GPU readiness: the GPU figures of issue 21 in one run of under 8 minutes on one GPU, printed as one table.

    scripts/gpu_check.sh                     # or: python scripts/gpu_check.py [--budget 420] [--batch 128] [--json F]

Rows: ResNet50 training images/s at 224 px, fp32 against bf16 autocast + channels_last, and bf16 + channels_last
with torch.compile; model FLOPs utilisation (MFU) of each, from the FLOPs of one training step counted by
torch.utils.flop_counter and the card's peak dense bf16 TFLOPS (PEAK_BF16_TFLOPS, looked up by device name);
DDP over every GPU present (NCCL, one process per GPU, bf16 + channels_last); ONNX Runtime's CUDA provider on the
exported ResNet50, fp32 and fp16, with the fp16 outputs' parity against PyTorch fp32. Every step has a share of
--budget seconds and a step that fails or is skipped is a row saying why, so that the table always comes out.

Without CUDA it prints one line, "gpu_check: no CUDA device ...", and exits 0: it never runs in CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Peak dense (no sparsity) bf16 tensor-core TFLOPS, from the vendors' data sheets; the first match of the device
# name (upper case) wins, so the more specific names come first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.4),
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),        # SXM
    ("GH200", 989.4),
    ("A100", 312.0),
]
IMAGE_SIZE = 224
CLASSES = 1000


def peak_tflops(device_name: str) -> float | None:
    """The card's peak dense bf16 TFLOPS, or None for a card missing from PEAK_BF16_TFLOPS."""
    name = device_name.upper()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def no_cuda_message() -> str | None:
    """The one line to print when there is no usable CUDA device, else None."""
    try:
        import torch
    except ImportError:
        return "gpu_check: no CUDA device (torch is not installed); nothing to measure"
    if not torch.cuda.is_available():
        return (f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                "nothing to measure")
    return None


def resnet50(channels_last: bool) -> Any:
    import torch
    import torchvision

    net = torchvision.models.resnet50(num_classes=CLASSES).cuda()
    return net.to(memory_format=torch.channels_last) if channels_last else net


def batch_of(batch: int, channels_last: bool) -> tuple[Any, Any]:
    import torch

    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
    y = torch.randint(0, CLASSES, (batch,), device="cuda")
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def train_step(net: Any, optimizer: Any, x: Any, y: Any, bf16: bool) -> None:
    import torch
    import torch.nn.functional as F

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def training_rate(batch: int, bf16: bool, channels_last: bool, compiled: bool, seconds: float) -> float:
    """ResNet50 training images/s: warm-up, then steps for about `seconds` (at least 10)."""
    import torch

    net = resnet50(channels_last)
    if compiled:
        net = torch.compile(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = batch_of(batch, channels_last)
    for _ in range(5 if not compiled else 8):
        train_step(net, optimizer, x, y, bf16)
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while steps < 10 or time.perf_counter() - start < seconds:
        train_step(net, optimizer, x, y, bf16)
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def flops_per_image() -> float:
    """FLOPs of one ResNet50 training step (forward + backward) per 224 px image, counted by torch."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    net = resnet50(False)
    x, y = batch_of(2, False)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / 2


def ddp_worker(rank: int, world: int, port: int, batch: int, seconds: float, out: str) -> None:
    """One DDP rank: bf16 + channels_last ResNet50 steps; rank 0 writes the images/s of all ranks."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    net = DistributedDataParallel(resnet50(True), device_ids=[rank])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = batch_of(batch, True)
    for _ in range(5):
        train_step(net, optimizer, x, y, True)
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while steps < 10 or time.perf_counter() - start < seconds:
        train_step(net, optimizer, x, y, True)
        steps += 1
    torch.cuda.synchronize()
    rate = torch.tensor([steps * batch / (time.perf_counter() - start)], device="cuda")
    dist.all_reduce(rate)
    if rank == 0:
        Path(out).write_text(json.dumps({"images_per_s": float(rate)}))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_rate(batch: int, seconds: float) -> tuple[int, float]:
    """(GPUs, total images/s) of DDP over every GPU present."""
    import torch
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ddp.json")
        mp.spawn(ddp_worker, args=(world, free_port(), batch, seconds, out), nprocs=world, join=True)
        return world, json.loads(Path(out).read_text())["images_per_s"]


def onnx_rows(batch: int, seconds: float) -> list[dict[str, Any]]:
    """ONNX Runtime CUDA images/s for ResNet50 inference in fp32 and fp16, and the fp16 parity with torch fp32."""
    import numpy as np
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [row("ONNX Runtime CUDA", None, "", f"skipped: onnxruntime {ort.__version__} has no "
                    "CUDAExecutionProvider (install onnxruntime-gpu)")]
    net = resnet50(False).eval()
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
    with torch.no_grad():
        reference = torch.softmax(net(x).float(), dim=1).cpu().numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision, model, example in (("fp32", net, x), ("fp16", copy.deepcopy(net).half(), x.half())):
            path = Path(tmp) / f"resnet50_{precision}.onnx"
            torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
            session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
            feed = {"x": example.cpu().numpy()}
            outputs = session.run(None, feed)[0].astype(np.float32)
            for _ in range(3):
                session.run(None, feed)
            runs, start = 0, time.perf_counter()
            while runs < 5 or time.perf_counter() - start < seconds:
                session.run(None, feed)
                runs += 1
            rate = runs * batch / (time.perf_counter() - start)
            probs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            gap = float(np.abs(probs - reference).max())
            agree = float((probs.argmax(1) == reference.argmax(1)).mean())
            ok = gap < 1e-2 and agree >= 0.99
            rows.append(row(f"ONNX Runtime CUDA inference, {precision}, batch {batch}", rate, "images/s",
                            f"max |p - p_torch fp32| {gap:.2e}, top-1 agreement {agree:.3f}"
                            + ("" if precision == "fp32" else f": parity {'OK' if ok else 'FAILED'}")))
    return rows


def row(name: str, value: float | None, unit: str, note: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "note": note}


def guarded(name: str, action: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of `action`, or one row saying why it failed (the table comes out whatever happens)."""
    try:
        return action()
    except Exception as err:  # a GPU check reports every failure as a row; it never stops half-way
        return [row(name, None, "", f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:160]}")]


def training_rows(args: argparse.Namespace, flops: float, peak: float | None) -> list[dict[str, Any]]:
    rows, share = [], args.budget * 0.12
    settings = [("fp32", False, False, False), ("bf16 + channels_last", True, True, False)]
    if not args.no_compile:
        settings.append(("bf16 + channels_last + torch.compile", True, True, True))
    base = None
    for label, bf16, channels_last, compiled in settings:
        rate = training_rate(args.batch, bf16, channels_last, compiled, share)
        base = base or rate
        mfu = f", MFU {rate * flops / (peak * 1e12):.1%}" if peak else ""
        rows.append(row(f"ResNet50 training 224 px, batch {args.batch}, {label}", rate, "images/s",
                        f"{rate / base:.2f}x fp32{mfu}"))
    return rows


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    print(header)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        value = f"{r['value']:12,.1f} {r['unit']}" if r["value"] is not None else f"{'-':>12}"
        print(f"{r['name']:<{width}} | {value:<22} | {r['note']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420, help="seconds for all the measurements together")
    parser.add_argument("--batch", type=int, default=128, help="training batch per GPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--no-ddp", action="store_true")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    message = no_cuda_message()
    if message:
        print(message)
        return 0
    import torch

    start = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name)
    flops = flops_per_image()
    header = (f"gpu_check: {torch.cuda.device_count()} x {name}, peak bf16 {peak or 'unknown'} TFLOPS, torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}; ResNet50 training {flops / 1e9:.1f} GFLOP/image; "
              f"load average {os.getloadavg()[0]:.1f}")
    rows = guarded("ResNet50 training", lambda: training_rows(args, flops, peak))
    if not args.no_ddp:
        def ddp() -> list[dict[str, Any]]:
            world, rate = ddp_rate(args.batch, args.budget * 0.12)
            return [row(f"DDP ResNet50 bf16 + channels_last, {world} GPU(s) x batch {args.batch}", rate, "images/s",
                        f"{rate / world:,.0f} images/s per GPU")]
        rows += guarded("DDP", ddp)
    rows += guarded("ONNX Runtime CUDA", lambda: onnx_rows(64, args.budget * 0.05))
    print_table(rows, header)
    print(f"gpu_check: {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
