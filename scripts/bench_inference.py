"""Inference latency: onnxruntime vs PyTorch eager, same weights, same inputs, side by side.

Models: the seed's workflow MLP (5 x 75, 42 features) and torchvision's resnet50 (3 classes, C x S x S images).
Batch sizes 1 and 64; median latency over repeated runs after warm-up; both on the CPU with the same number of
threads. Prints milliseconds per batch and the ratio torch / onnxruntime (> 1: onnxruntime is faster).

    python scripts/bench_inference.py [--threads 2] [--image-size 64] [--channels 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision

from bench_all import bench_line
from cmsdl.models.mlp import MLP


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def onnx_session(model: torch.nn.Module, example: torch.Tensor, threads: int) -> ort.InferenceSession:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def compare(name: str, model: torch.nn.Module, shape: tuple[int, ...], threads: int, repeats: int) -> list[dict]:
    model.eval()
    session = onnx_session(model, torch.randn(2, *shape), threads)
    rows = []
    for batch in (1, 64):
        x = torch.randn(batch, *shape)
        x_np = x.numpy()
        with torch.inference_mode():
            np.testing.assert_allclose(session.run(None, {"x": x_np})[0], model(x).numpy(), atol=1e-3)
            torch_ms = median_ms(lambda: model(x), repeats)
        ort_ms = median_ms(lambda: session.run(None, {"x": x_np}), repeats)
        rows.append({"model": name, "batch": batch, "torch_ms": torch_ms, "onnxruntime_ms": ort_ms,
                     "ratio": torch_ms / ort_ms})
        print(f"{name:<10}{batch:>6}{torch_ms:>12.3f}{ort_ms:>16.3f}{torch_ms / ort_ms:>10.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--resnet-repeats", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.small:
        args.repeats, args.resnet_repeats, args.image_size = 50, 2, 32
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, {args.threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"{'model':<10}{'batch':>6}{'torch ms':>12}{'onnxruntime ms':>16}{'ratio':>10}")
    mlp = MLP(42, 1, hidden=[75] * 5, dropout=0.002)
    rows = compare("mlp", mlp, (42,), args.threads, args.repeats)
    resnet = torchvision.models.resnet50(num_classes=3)
    resnet.conv1 = torch.nn.Conv2d(args.channels, 64, 7, 2, 3, bias=False)
    rows += compare("resnet50", resnet, (args.channels, args.image_size, args.image_size), args.threads,
                    args.resnet_repeats)
    mlp_1 = next(r for r in rows if r["model"] == "mlp" and r["batch"] == 1)
    print(bench_line("inference: MLP batch 1, onnxruntime vs torch eager", 1000 / mlp_1["onnxruntime_ms"],
                     1000 / mlp_1["torch_ms"], ">= 2", "batches/s"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
