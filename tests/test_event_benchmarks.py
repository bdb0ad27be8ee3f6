"""The event-image benchmarks keep running at tiny sizes; their figures go to docs/benchmarks.md, never into asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cmsdl


def run_script(name: str, tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args, "--json", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    return proc.stdout, json.loads(out.read_text())


def test_hits2png_benchmark_renders_the_same_pixels_both_ways(tmp_path: Path) -> None:
    stdout, figures = run_script("bench_hits2png.py", tmp_path, "--events", "60", "--size", "32", "--step-size", "25")
    assert "ratio vectorised/loop (render)" in stdout
    assert figures["identical_pixels"] > 0.999 and figures["events"] == 60


@pytest.mark.slow
def test_image_loader_benchmark_compares_png_and_cache(tmp_path: Path) -> None:
    stdout, figures = run_script("bench_image_loader.py", tmp_path, "--events", "40", "--size", "16", "--epochs", "1")
    assert "ratio cache/PNG" in stdout and figures["images"] == 56
    assert figures["png_images_per_s"] > 0 and figures["cache_images_per_s"] > 0


def test_precision_benchmark_times_both_sides_on_the_same_network(tmp_path: Path) -> None:
    stdout, figures = run_script("bench_resnet_precision.py", tmp_path, "--arch", "resnet18", "--size", "16",
                                 "--batch-size", "4", "--steps", "1", "--warmup", "0", "--device", "cpu")
    assert "bf16 + channels_last" in stdout and figures["batch_size"] == 4
    assert figures["ratio"] == pytest.approx(figures["bf16_channels_last_images_per_s"] / figures["fp32_images_per_s"])


@pytest.mark.slow
def test_toy_separability_reports_each_view(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "toy_separability.py"), "--events", "300",
                           "--classes", "jpsi", "qcd"], cwd=tmp_path, capture_output=True, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if "accuracy" in line]
    assert [line.split(" accuracy")[0].strip() for line in lines] == ["all", "no pT values", "directions only"]
    assert all(float(line.split("accuracy")[1].split("%")[0]) > 80 for line in lines)


@pytest.mark.slow
def test_toy_separability_reports_the_hit_count_baseline_of_root_files(tmp_path: Path) -> None:
    run_cmsdl("simulate", "out=raw", "n_events=100", "processes=[jpsi,qcd]", "progress=false", cwd=tmp_path)
    stdout, figures = run_script("toy_separability.py", tmp_path, "--root", "raw/*.root", "--classes", "jpsi", "qcd")
    assert "hit counts only, HistGradientBoosting, 5-fold" in stdout and figures["events"] == 200
    assert {"total hits", "hits per subdetector"} <= set(figures) and figures["majority_rate"] == 0.5
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "toy_separability.py"), "--root", "none/*.root"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: files: no ROOT files given") and "Traceback" not in bad.stderr
