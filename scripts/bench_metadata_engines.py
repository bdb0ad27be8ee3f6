"""Benchmark: engine=local vs engine=spark for popularity features and transfer flattening at 1x, 4x, 16x size.

    .venv/bin/python scripts/bench_metadata_engines.py [--scales 1 4 16] [--master 'local[*]'] [--work DIR]
    .venv/bin/python scripts/bench_metadata_engines.py --small    # scripts/bench_all.py: transfers at 1x only

1x is the default simulated size (`cmsdl simulate-popularity`: 4000 datasets x 60 weeks; `cmsdl
simulate-transfers`: 20,000 records). Every measurement runs in its own process (this script with --run), so
the peak memory is that of the process tree: the Python process plus, for Spark, the JVM and its Python workers
(RSS summed over /proc every 0.2 s). Wall time includes reading the input and, for Spark, starting the JVM.
Each line prints the load average, as the machine may be shared. A run that fails (out of memory included) is
reported as such and the others go on. Nothing is compared here: tests/test_spark_engine.py checks equality.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_all import bench_line

POPULARITY_DATASETS, POPULARITY_WEEKS, TRANSFERS = 4000, 60, 20_000


def write_inputs(work: Path, scale: int) -> tuple[Path, Path]:
    """Simulated popularity CSV and transfer log at `scale` times the default size (written once per scale)."""
    from cmsdl.features.popularity.records import write_popularity
    from cmsdl.sim.popularity import simulate_popularity
    from cmsdl.sim.transfers import simulate_transfers, write_log

    popularity, transfers = work / f"popularity-{scale}x.csv", work / f"transfers-{scale}x.log"
    if not popularity.exists():
        write_popularity(popularity, simulate_popularity(POPULARITY_DATASETS * scale, POPULARITY_WEEKS, seed=1))
    if not transfers.exists():
        write_log(transfers, simulate_transfers(TRANSFERS * scale, seed=1)[0])
    return popularity, transfers


def run_one(task: str, engine: str, path: str, master: str, work: str) -> None:
    """One measurement (in the child process): build popularity samples or flatten a transfer log."""
    from cmsdl.features.spark_session import SparkSettings

    settings = SparkSettings(master=master, shuffle_partitions=8, conf={"spark.driver.memory": "4g"})
    if task == "popularity":
        from cmsdl.features.popularity.source import PopularitySource

        source = PopularitySource(path, engine=engine, spark={"master": master, "shuffle_partitions": 8,
                                                              "conf": dict(settings.conf)},
                                  table_out=str(Path(work) / f"samples-{os.getpid()}.parquet"))
        samples, _ = source.load()
        print(f"rows={len(samples)}")
    else:
        from cmsdl.features.transfers.records import flatten_records, read_transfer_log
        from cmsdl.features.transfers.spark import flatten_logs_spark

        if engine == "local":
            table = flatten_records(read_transfer_log(path).records)
        else:
            table = flatten_logs_spark(path, Path(work) / f"flat-{os.getpid()}.parquet", settings)[1]
        print(f"rows={table.n_rows}")


def tree_rss(root: int) -> int:
    """Resident memory (bytes) of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        todo += children
    return sum(rss.get(p, 0) for p in tree)


def measure(task: str, engine: str, path: Path, master: str, work: Path, timeout: float) -> tuple[float, int, str]:
    """Wall seconds, peak tree RSS and the child's last output line (or why it failed)."""
    command = [sys.executable, __file__, "--run", task, engine, str(path), "--master", master, "--work", str(work)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(child.pid))
        if time.perf_counter() - start > timeout:
            child.kill()
            child.wait()
            return time.perf_counter() - start, peak, f"timed out after {timeout:.0f} s"
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    out, err = child.communicate()
    if child.returncode != 0:
        return seconds, peak, f"failed (exit {child.returncode}): {(err.strip().splitlines() or ['?'])[-1][:120]}"
    return seconds, peak, out.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tasks", nargs="+", default=["popularity", "transfers"])
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--work", default=None, help="directory for the simulated inputs (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--run", nargs=3, metavar=("TASK", "ENGINE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(*args.run, args.master, args.work)
        return
    if args.small:
        args.scales, args.tasks, args.timeout = [1], ["transfers"], 300.0
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{os.cpu_count()} CPUs, Spark master {args.master}")
        print("task | scale | input MB | engine | wall s | peak RSS GB (tree) | result | load avg (1/5/15 min)")
        for scale in args.scales:
            paths = dict(zip(("popularity", "transfers"), write_inputs(work, scale)))
            for task in args.tasks:
                size = paths[task].stat().st_size / 1e6
                walls, ok = {}, True
                for engine in ("local", "spark"):
                    seconds, peak, result = measure(task, engine, paths[task], args.master, work, args.timeout)
                    walls[engine], ok = seconds, ok and result.startswith("rows=")
                    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
                    print(f"{task} | {scale}x | {size:.0f} | {engine} | {seconds:.1f} | {peak / 1e9:.2f} | {result} | "
                          f"{load}", flush=True)
                print(f"{task} | {scale}x | spark / local wall time: {walls['spark'] / walls['local']:.2f}", flush=True)
                if ok:  # a failed run is no figure (bench_all then reports the script as failed)
                    print(bench_line(f"metadata engines: {task} {scale}x, spark vs local wall time (JVM start included)",
                                     walls["spark"], walls["local"], "", "s"), flush=True)


if __name__ == "__main__":
    main()
