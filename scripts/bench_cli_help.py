"""Wall time of `cmsdl <command> --help` next to what the same help cost when the command module imported its domain
module (torch, Lightning) first: `python scripts/bench_cli_help.py [--repeats 3] [--commands train,predict]`."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CMSDL = str(Path(sys.executable).with_name("cmsdl"))
# command → the domain module its --help imported before the imports moved inside main()
DOMAIN_MODULES = {"train": "cmsdl.train", "eval": "cmsdl.evaluate", "export": "cmsdl.export.exporter",
                  "predict": "cmsdl.predict", "serve": "cmsdl.serve.server"}


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
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (median of {args.repeats} runs)")
    print(f"{'command':<24} {'--help now':>11} {'help + domain import (before)':>30} {'ratio':>7}")
    for name in args.commands.split(","):
        now = median_time([CMSDL, name, "--help"], args.repeats)
        before = median_time([sys.executable, "-c", f"import {DOMAIN_MODULES[name]}; from cmsdl.cli import main; "
                              f"main(['{name}', '--help'])"], args.repeats)
        print(f"{'cmsdl ' + name + ' --help':<24} {now:>10.2f}s {before:>29.2f}s {before / now:>6.1f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
