"""The ROOT streaming benchmark keeps running (tiny sizes); its figures go to docs/benchmarks.md, never into asserts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_root_stream_benchmark_prints_every_ratio(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_root_stream.py"), "--events-per-file", "500",
                           "--files", "1", "--repeats", "1", "--json", str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("command: ")
    expected = ["ratio DataModule/raw events/s, local ROOT:", "ratio DataModule/raw events/s, Parquet cache:",
                "ratio DataModule/raw events/s, Parquet cache vs raw uproot on local ROOT:",
                "ratio epoch memory above imports 4x files/1x files:"]
    if shutil.which("xrootd"):
        expected.append("ratio DataModule/raw events/s, XRootD root://:")
    for line in expected:
        assert line in proc.stdout, proc.stdout
    figures = json.loads(out.read_text())
    assert figures["entries"] == 1000 and [m["files"] for m in figures["memory"]] == [2, 8]
