"""Benchmark: records per second of the transfer-log flattener vs a naive per-record implementation.

    .venv/bin/python scripts/bench_flatten.py [--records 50000]

Both turn the same cmsdl-transfers/1 log text into the same table of numbers (text hashed, missing values set
to the placeholder; a test checks they agree). Naive: per line json.loads, recursive flatten into a dict, then
one Python row per record over the union of columns, hashing every text cell. cmsdl: one json.loads over the
whole log, leaves gathered straight into per-column lists, numbers converted per column by numpy, each
distinct text hashed once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_all import bench_line
from cmsdl.features.transfers.records import flatten_records, naive_flatten_table, parse_transfer_log
from cmsdl.sim.transfers import simulate_transfers, write_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.small:
        args.records = 5_000
    records, _ = simulate_transfers(args.records, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        text = write_log(Path(tmp) / "t.log", records).read_text()
    naive_s, fast_s = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        names, rows = naive_flatten_table(text.splitlines())
        naive_table = np.array(rows)
        naive_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        table = flatten_records(parse_transfer_log(text).records)
        fast_table = table.matrix(list(table.columns), -1.0)
        fast_s.append(time.perf_counter() - start)
    assert names == list(table.columns) and np.allclose(naive_table, fast_table)
    naive, fast = min(naive_s), min(fast_s)
    print(f"{args.records:,} records, {len(text) / 1e6:.1f} MB of log text, {len(names)} flattened columns "
          f"(best of {args.repeat})")
    print(f"naive per-record: {naive:.2f} s, {args.records / naive:,.0f} records/s")
    print(f"cmsdl flattener:  {fast:.2f} s, {args.records / fast:,.0f} records/s")
    print(f"ratio: {naive / fast:.2f}x faster")
    print(bench_line("transfer-log flattener vs naive per-record", args.records / fast, args.records / naive, ">= 1.0",
                     "records/s"))


if __name__ == "__main__":
    main()
