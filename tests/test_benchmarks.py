"""Benchmark scripts keep running (tiny sizes); their figures go to docs/benchmarks.md, never into asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_train_overhead_benchmark_compares_three_sides_for_both_workloads(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_train_overhead.py"), "--workflows", "400",
                           "--epochs", "1", "--resnet-images", "40", "--resnet-batch", "8", "--image-size", "32",
                           "--resnet-epochs", "1", "--json", str(out), "callbacks.progress_bar.refresh_rate=0"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert [line.split('"')[3] for line in proc.stdout.splitlines() if line.startswith("BENCH ")] == [
        "train overhead: MLP, cmsdl vs bare Lightning", "train overhead: ResNet34 step, cmsdl vs raw PyTorch"]
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["MLP 5x75", "ResNet34 step"]
    assert all(r[f"{side}_per_s"] > 0 for r in rows for side in ("raw", "bare", "cmsdl"))


def test_inference_benchmark_runs_both_runtimes(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "bench_inference.py"), "--repeats", "3",
                    "--resnet-repeats", "1", "--image-size", "32", "--json", str(out)], check=True,
                   capture_output=True)
    rows = json.loads(out.read_text())
    assert {(r["model"], r["batch"]) for r in rows} == {("mlp", 1), ("mlp", 64), ("resnet50", 1), ("resnet50", 64)}


def test_serve_benchmark_compares_json_and_npy(exported_model: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_serve.py"), "--model", str(exported_model),
                           "--clients", "2", "--requests", "20", "--batch", "4"], check=True, capture_output=True,
                          text=True)
    assert "ratio npy/json requests/s" in proc.stdout
