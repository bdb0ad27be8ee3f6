"""Wall time of `cmsdl <command> --help` next to what the same help cost when the command module imported its domain
module (torch, Lightning) first: `python scripts/bench_cli_help.py [--repeats 3] [--commands train,predict]`.
`--small` (scripts/bench_all.py): `train` once each way; the BENCH line states `cmsdl train --help` against 1 s."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_all import bench_line

CMSDL = str(Path(sys.executable).with_name("cmsdl"))
# command → the domain module its --help imported before the imports moved inside main()
DOMAIN_MODULES = {"train": "cmsdl.train", "eval": "cmsdl.evaluate", "export": "cmsdl.export.exporter",
                  "predict": "cmsdl.predict", "serve": "cmsdl.serve.server"}
HELP_GOAL_S = 1.0  # issue 21: a command's --help answers in under a second


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_time(command: list[str], repeats: int) -> float:
    return statistics.median(wall_time(command) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", default="train,predict")
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    args = parser.parse_args()
    if args.small:
        args.repeats, args.commands = 1, "train"
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (median of {args.repeats} runs)")
    print(f"{'command':<24} {'--help now':>11} {'help + domain import (before)':>30} {'ratio':>7}")
    for name in args.commands.split(","):
        now = median_time([CMSDL, name, "--help"], args.repeats)
        before = median_time([sys.executable, "-c", f"import {DOMAIN_MODULES[name]}; from cmsdl.cli import main; "
                              f"main(['{name}', '--help'])"], args.repeats)
        print(f"{'cmsdl ' + name + ' --help':<24} {now:>10.2f}s {before:>29.2f}s {before / now:>6.1f}x")
        print(bench_line(f"CLI: cmsdl {name} --help wall time vs with its domain module imported (goal < 1 s)", now,
                         before, "<= 1", "s", ratio=now / HELP_GOAL_S,
                         note=f"ratio = ours / {HELP_GOAL_S:.0f} s (the goal); reference: the help with "
                              f"{DOMAIN_MODULES[name]} imported first, median of {args.repeats}"))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
