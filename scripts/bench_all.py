"""Every benchmark of scripts/ in its small configuration, and one table of their figures (`make bench`).

    python scripts/bench_all.py [--only NAME ...] [--timeout 600] [--json FILE]

The convention each bench script follows (bench_all runs it as `python scripts/bench_X.py --small` and reads its
output; nothing else is parsed):

* `--small` selects a configuration that runs in about a minute on 2 busy cores;
* for every figure that has a goal, the script prints one line `BENCH {json}` (use `bench_line` below, or print the
  same JSON), with the keys
    name       what is measured, e.g. "ROOT stream: local files, DataModule vs uproot.iterate"
    ours       our figure (a number)
    reference  the reference measured in the same run (a number), e.g. raw uproot's events/s
    ratio      ours / reference, or whatever the goal is stated on (a number)
    goal       the condition on `ratio` that meets the goal: ">= 0.8", "<= 1.05", or "" when there is none
    unit       the unit of ours and reference, e.g. "events/s"
  and optionally `load` (os.getloadavg()[0] when measured) and `note`.

Scripts are run one at a time with OMP_NUM_THREADS unchanged; a script that fails, times out or prints no BENCH line
gets a row saying so, and bench_all exits 1 when any did. Goals not met do not change the exit status: the table
says which are met on this machine, at this load.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
PREFIX = "BENCH "
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
# bench scripts that are not run by default: studies that need more than the small budget, or hardware
SKIPPED: dict[str, str] = {}


def bench_line(name: str, ours: float, reference: float, goal: str, unit: str, ratio: float | None = None,
               note: str = "") -> str:
    """The `BENCH {json}` line of one figure (ratio: ours / reference unless given)."""
    record = {"name": name, "ours": float(ours), "reference": float(reference),
              "ratio": float(ratio if ratio is not None else ours / reference if reference else float("nan")),
              "goal": goal, "unit": unit, "load": round(os.getloadavg()[0], 2)}
    if note:
        record["note"] = note
    return PREFIX + json.dumps(record)


def goal_met(goal: str, ratio: float) -> bool | None:
    """Whether `ratio` meets a goal such as ">= 0.8"; None when there is no goal (or it cannot be read)."""
    text = goal.strip()
    for symbol in sorted(COMPARISONS, key=len, reverse=True):
        if text.startswith(symbol):
            try:
                return COMPARISONS[symbol](ratio, float(text[len(symbol):]))
            except ValueError:
                return None
    return None


def parse_bench_lines(output: str) -> list[dict[str, Any]]:
    """The records of every `BENCH {json}` line of a script's output (lines that are not valid JSON are skipped)."""
    records = []
    for line in output.splitlines():
        if line.startswith(PREFIX):
            try:
                record = json.loads(line[len(PREFIX):])
            except ValueError:
                continue
            if isinstance(record, dict) and {"name", "ours", "reference", "ratio"} <= record.keys():
                records.append(record)
    return records


def bench_scripts(only: list[str] | None) -> list[Path]:
    """scripts/bench_*.py (not this one), or those named in `only` (with or without bench_ and .py)."""
    found = sorted(p for p in SCRIPTS.glob("bench_*.py") if p.name != Path(__file__).name)
    if not only:
        return [p for p in found if p.stem not in SKIPPED]
    wanted = {name.removesuffix(".py").removeprefix("bench_") for name in only}
    return [p for p in found if p.stem.removeprefix("bench_") in wanted]


def run_script(path: Path, timeout_s: float) -> tuple[list[dict[str, Any]], str, float]:
    """(records, problem or "", seconds) of `python path --small`."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(path), "--small"], capture_output=True, text=True,
                              timeout=timeout_s, cwd=SCRIPTS.parent)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout_s:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    records = parse_bench_lines(proc.stdout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return records, f"exit {proc.returncode}: {last[:120]}", seconds
    if not records:
        return [], "printed no BENCH line", seconds
    return records, "", seconds


def number(value: Any) -> str:
    """A figure for the table: thousands separated, 3 significant digits below 100."""
    if not isinstance(value, int | float) or value != value:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table_rows(results: list[tuple[Path, list[dict[str, Any]], str, float]]) -> list[list[str]]:
    rows = []
    for path, records, problem, seconds in results:
        for r in records:
            met = goal_met(str(r.get("goal", "")), float(r["ratio"]))
            rows.append([r["name"], f"{number(r['ours'])} {r.get('unit', '')}".strip(), number(r["reference"]),
                         f"{float(r['ratio']):.3f}", str(r.get("goal", "")) or "-",
                         {True: "met", False: "NOT MET", None: "-"}[met], number(r.get("load")), path.name])
        if problem:
            rows.append([path.stem, "-", "-", "-", "-", f"FAILED ({problem})", "-", path.name])
    return rows


def print_table(rows: list[list[str]]) -> None:
    header = ["benchmark", "ours", "reference", "ratio", "goal", "met", "load", "script"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="bench scripts to run (e.g. root_stream train_overhead)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per script")
    parser.add_argument("--json", type=Path, help="also write every record to this file")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"bench_all: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    results = []
    for path in bench_scripts(args.only):
        print(f"running {path.name} --small ...", flush=True)
        records, problem, seconds = run_script(path, args.timeout)
        print(f"  {seconds:.0f} s" + (f", {problem}" if problem else ""), flush=True)
        results.append((path, records, problem, seconds))
    print()
    print_table(table_rows(results))
    load = os.getloadavg()
    total = sum(seconds for *_, seconds in results)
    print(f"\n{len(results)} scripts in {total:.0f} s; load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.json:
        args.json.write_text(json.dumps([{"script": p.name, "records": r, "problem": q, "seconds": s}
                                         for p, r, q, s in results], indent=2))
    return 1 if any(problem for _, _, problem, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
