"""scripts/bench_all.py (one table from every bench script's BENCH lines) and scripts/gpu_check.py without CUDA."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO


def script(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("goal, ratio, met", [(">= 0.8", 0.81, True), (">= 0.8", 0.79, False), ("<= 1.25", 1.3, False),
                                              ("<=1.25", 1.0, True), ("", 3.0, None), ("fast", 1.0, None)])
def test_goals_are_read_from_their_text(goal: str, ratio: float, met: bool | None) -> None:
    assert script("bench_all").goal_met(goal, ratio) is met


def test_bench_lines_round_trip_and_other_output_is_ignored() -> None:
    bench_all = script("bench_all")
    line = bench_all.bench_line("ROOT stream: local", 800.0, 1000.0, ">= 0.8", "events/s")
    output = f"table\nBENCH not json\n{line}\nBENCH {json.dumps({'name': 'x'})}\n"
    [record] = bench_all.parse_bench_lines(output)
    assert record["ratio"] == pytest.approx(0.8) and record["unit"] == "events/s" and "load" in record


def test_a_failing_or_silent_script_is_a_row_and_the_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench_all = script("bench_all")
    good, silent, broken = (tmp_path / f"bench_{n}.py" for n in ("good", "silent", "broken"))
    good.write_text("import sys\nassert sys.argv[1:] == ['--small']\n"
                    "print('BENCH {\"name\": \"good\", \"ours\": 2, \"reference\": 1, \"ratio\": 2, \"goal\": \">= 1\", "
                    "\"unit\": \"x/s\"}')\n")
    silent.write_text("print('done')\n")
    broken.write_text("raise SystemExit('error: no data')\n")
    results = [(p, *bench_all.run_script(p, 60)) for p in (good, silent, broken)]
    assert [problem for _, _, problem, _ in results] == ["", "printed no BENCH line", "exit 1: error: no data"]
    rows = bench_all.table_rows(results)
    assert rows[0][:6] == ["good", "2 x/s", "1", "2.000", ">= 1", "met"]
    assert [r[5] for r in rows[1:]] == ["FAILED (printed no BENCH line)", "FAILED (exit 1: error: no data)"]
    bench_all.print_table(rows)
    assert "NOT MET" not in capsys.readouterr().out


def test_every_bench_script_has_the_small_flag_and_a_bench_line() -> None:
    """bench_all runs each with --small and reads its BENCH lines; a script without them would be a FAILED row."""
    scripts = script("bench_all").bench_scripts(None)
    assert len(scripts) >= 11
    for path in scripts:
        text = path.read_text()
        assert '"--small"' in text and "bench_line(" in text, path.name


def test_gpu_check_without_cuda_is_one_line_and_exit_0(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script("gpu_check").main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu_check: no CUDA device")


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4),
                                        ("NVIDIA H100 PCIe", 756.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("Tesla T4", None)])
def test_peak_bf16_tflops_by_device_name(name: str, peak: float | None) -> None:
    assert script("gpu_check").peak_tflops(name) == peak
