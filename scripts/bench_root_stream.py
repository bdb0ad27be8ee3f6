"""Benchmark: events/s of one RootTableDataModule training epoch vs raw uproot.iterate over the same ROOT files.

    .venv/bin/python scripts/bench_root_stream.py [--events-per-file 100000] [--files 4] [--step-size "50 MB"]
                                                  [--repeats 3] [--skip-xrootd] [--json FILE]

Data: `cmsdl simulate-top` events (one ttbar and one qcd file of --events-per-file events, copied to --files files
per process), read with the default spec of configs/data/root_table.yaml. Three sources, each timed side by side
with the raw read of the same data (passes alternate, the best of --repeats of each is kept):

* local ROOT files: raw = uproot.iterate over spec.branches(), same step size, library="ak" (arrays materialised);
* the columnar cache (cache_dir set; epochs after the scan read Parquet): raw = pyarrow reading the same Parquet
  files; the ratio to raw uproot over the ROOT files is printed too;
* the same files over root:// from a real xrootd server on loopback: raw = uproot.iterate over the same URLs.

Events/s counts the entries of the ROOT files per second of wall time; train rows/s the rows the DataModule
delivered. setup() (the one-off statistics scan, and writing the cache) is timed separately. Peak memory of an
epoch (VmHWM, reset after setup) is measured in fresh subprocesses at --files and 4 x --files files per process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import pyarrow.parquet as pq  # noqa: E402
import uproot  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench_all import bench_line  # noqa: E402
from cmsdl.data.root_table import RootTableDataModule  # noqa: E402
from cmsdl.sim.nanoaod import PROCESS_CODES, simulate_events, write_root  # noqa: E402

PROCESSES = ("ttbar", "qcd")
MEMORY_SCALE = 4
MEMORY_GROWTH_LIMIT = 1.25
GOAL_RATIO = 0.8  # DataModule events/s over raw uproot's (issue 21)
TIMEOUT_S = 30


def step_size(text: str) -> int | str:
    """An entry count ("20000") or a byte size ("50 MB"), as RootTableDataModule and uproot take it."""
    return int(text) if text.strip().isdigit() else text


def file_name(process: str, index: int) -> str:
    """The simulate-top name of file `index` of a process."""
    return f"{process}_{index:03d}.root"


def simulate(directory: Path, events_per_file: int) -> float:
    """Write file 000 of every process; the seconds it took."""
    start = time.perf_counter()
    for process in PROCESSES:
        events = simulate_events(process, events_per_file, (1, PROCESS_CODES[process], 0))
        write_root(directory / file_name(process, 0), events)
    return time.perf_counter() - start


def replicate(directory: Path, files: int) -> None:
    """Copies of file 000 up to `files` files per process (same size, other names, hence other splits)."""
    for process in PROCESSES:
        for index in range(1, files):
            target = directory / file_name(process, index)
            if not target.exists():
                shutil.copyfile(directory / file_name(process, 0), target)


def file_lists(files: int, locate: Callable[[str], str]) -> dict[str, list[str]]:
    """Process → its first `files` files, each named by `locate` (a local path or a root:// URL)."""
    return {p: [locate(file_name(p, i)) for i in range(files)] for p in PROCESSES}


def all_files(lists: dict[str, list[str]]) -> list[str]:
    """Every file of every process, in order."""
    return [path for paths in lists.values() for path in paths]


def module(files: dict[str, list[str]], step: int | str, cache_dir: Path | None = None) -> RootTableDataModule:
    """RootTableDataModule with the default spec of configs/data/root_table.yaml, reading `files`."""
    cfg = OmegaConf.load(REPO / "configs" / "data" / "root_table.yaml")
    cfg.spec.files = files
    cfg.seed = 1
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("_target_")
    settings.update(step_size=step, cache_dir=str(cache_dir) if cache_dir else None, progress=False)
    return RootTableDataModule(**settings)


def spec_branches(files: dict[str, list[str]]) -> list[str]:
    """The branches the default spec reads (spec.branches())."""
    return module(files, 1).spec.branches()


def raw_root(paths: list[str], names: list[str], step: int | str) -> int:
    """Entries read by uproot.iterate over `paths` (awkward arrays materialised)."""
    options = {"timeout": TIMEOUT_S} if paths[0].startswith("root://") else {}
    entries = 0
    for arrays in uproot.iterate({p: "Events" for p in paths}, filter_name=names, step_size=step, library="ak",
                                 **options):
        entries += len(arrays)
    return entries


def raw_parquet(directory: Path) -> int:
    """Rows of every Parquet file under `directory`, read by pyarrow."""
    return sum(pq.read_table(path).num_rows for path in sorted(directory.rglob("unit-*.parquet")))


def epoch(dm: RootTableDataModule) -> int:
    """Training rows of one pass over train_dataloader()."""
    return sum(len(batch[0]) for batch in dm.train_dataloader())


def timed(action: Callable[[], int], cpu: list[float] | None = None) -> tuple[float, int]:
    """Wall time of `action()` and what it returned (its CPU seconds, all threads, appended to `cpu`)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = action()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start, result


def compare(name: str, entries: int, dm: RootTableDataModule, raw: Callable[[], int],
            repeats: int) -> dict[str, Any]:
    """Setup time, then raw passes and DataModule epochs alternately; the best of each and their ratio."""
    start = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - start
    raw_times, epoch_times, raw_cpu, epoch_cpu, rows = [], [], [], [], 0
    expected_rows = int(dm.rows_per_unit[:, 0].sum())
    for _ in range(repeats):
        seconds, raw_rows = timed(raw, raw_cpu)
        raw_times.append(seconds)
        seconds, rows = timed(lambda: epoch(dm), epoch_cpu)
        epoch_times.append(seconds)
        if raw_rows != expected_raw(name, entries, dm) or rows != expected_rows:
            raise SystemExit(f"{name}: raw read {raw_rows:,} rows, DataModule epoch {rows:,} training rows; expected "
                             f"{expected_raw(name, entries, dm):,} and {expected_rows:,} (the scan's count)")
    raw_s, epoch_s = min(raw_times), min(epoch_times)
    return {"source": name, "setup_s": setup_s, "raw_s": raw_s, "epoch_s": epoch_s,
            "raw_events_per_s": entries / raw_s, "dm_events_per_s": entries / epoch_s,
            "train_rows": rows, "train_rows_per_s": rows / epoch_s, "ratio": raw_s / epoch_s,
            "raw_cpu_s": min(raw_cpu), "epoch_cpu_s": min(epoch_cpu), "cpu_ratio": min(raw_cpu) / min(epoch_cpu)}


def expected_raw(name: str, entries: int, dm: RootTableDataModule) -> int:
    """Rows the raw side must read: every entry of the ROOT files, or every selected row in the Parquet cache."""
    return int(dm.rows_per_unit.sum()) if name == "Parquet cache" else entries


def local_figures(data: Path, cache: Path, args: argparse.Namespace, entries: int) -> list[dict[str, Any]]:
    """Local ROOT files, then the Parquet cache built from them."""
    step = step_size(args.step_size)
    files = file_lists(args.files, lambda name: str(data / name))
    paths, names = all_files(files), spec_branches(files)
    local = compare("local ROOT", entries, module(files, step), lambda: raw_root(paths, names, step), args.repeats)
    cached = compare("Parquet cache", entries, module(files, step, cache), lambda: raw_parquet(cache), args.repeats)
    cached["ratio_to_raw_root"] = cached["dm_events_per_s"] / local["raw_events_per_s"]
    return [local, cached]


def remote_step(step: int | str, url: str, local: Path, names: list[str]) -> int | str:
    """`step`, or the same work unit in entries where uproot cannot size a byte step over root:// (TypeError)."""
    if isinstance(step, int):
        return step
    try:
        uproot.open({url: None}, timeout=TIMEOUT_S)["Events"].num_entries_for(step, filter_name=names)
        return step
    except TypeError as err:
        entries = int(uproot.open(local)["Events"].num_entries_for(step, filter_name=names))
        print(f"XRootD: step size {step!r} fails over root:// (TypeError: {err}); both sides use the same work "
              f"unit in entries, {entries:,}")
        return entries


def xrootd_figures(server: Any, args: argparse.Namespace, entries: int) -> dict[str, Any]:
    """The same files over root:// from the xrootd server (URLs listed one by one: globs do not work on URLs)."""
    files = file_lists(args.files, server.url)
    urls, names = all_files(files), spec_branches(files)
    step = remote_step(step_size(args.step_size), urls[0], server.directory / file_name(PROCESSES[0], 0), names)
    return compare("XRootD root://", entries, module(files, step), lambda: raw_root(urls, names, step),
                   args.repeats)


def vm_kib(field: str) -> int:
    """A Vm* line (VmRSS, VmHWM) of /proc/self/status, in KiB."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure_memory(args: argparse.Namespace) -> None:
    """(child process) One setup and one epoch; prints its memory figures as one JSON line."""
    dm = module(file_lists(args.files, lambda name: str(args.data / name)), step_size(args.step_size))
    start_kib = vm_kib("VmRSS")
    dm.setup()
    setup_kib = vm_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")
    rows = epoch(dm)
    print(json.dumps({"files": len(PROCESSES) * args.files, "train_rows": rows, "shuffle_rows": dm.shuffle_rows,
                      "start_mb": start_kib / 1024,
                      "setup_peak_mb": setup_kib / 1024, "epoch_peak_mb": vm_kib("VmHWM") / 1024}))


def memory_run(data: Path, files: int, step: str) -> dict[str, Any]:
    """Memory figures of a DataModule setup and epoch over `files` files per process, in a fresh interpreter."""
    command = [sys.executable, __file__, "--measure-memory", "--data", str(data), "--files", str(files),
               "--step-size", step]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_figures(data: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Memory at --files and MEMORY_SCALE x --files files per process (copies of the same file)."""
    replicate(data, MEMORY_SCALE * args.files)
    return [memory_run(data, n, args.step_size) for n in (args.files, MEMORY_SCALE * args.files)]


def start_server(base: Path) -> Any:
    """A real xrootd on loopback serving base/data (tests/xrootd_server.py), or None when it cannot run here."""
    from tests.xrootd_server import XRootDServer

    missing = [m for m in ("XRootD", "fsspec_xrootd") if importlib.util.find_spec(m) is None]
    if shutil.which("xrootd") is None or missing:
        print(f"XRootD skipped: missing {', '.join(missing or ['the xrootd binary'])}")
        return None
    server = XRootDServer(base)
    server.start()
    return server


def print_table(figures: list[dict[str, Any]]) -> None:
    """The rates of every source and their ratios."""
    print("source            | setup s | raw s | epoch s | raw events/s | DataModule events/s | train rows/s | ratio "
          "| CPU s raw / epoch | CPU ratio")
    for f in figures:
        print(f"{f['source']:17} | {f['setup_s']:7.2f} | {f['raw_s']:5.2f} | {f['epoch_s']:7.2f} | "
              f"{f['raw_events_per_s']:12,.0f} | {f['dm_events_per_s']:19,.0f} | {f['train_rows_per_s']:12,.0f} | "
              f"{f['ratio']:5.2f} | {f['raw_cpu_s']:7.2f} / {f['epoch_cpu_s']:5.2f} | {f['cpu_ratio']:9.2f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    for f in figures:
        print(f"ratio DataModule/raw events/s, {f['source']}: {f['ratio']:.2f}")
        if "ratio_to_raw_root" in f:
            print(f"ratio DataModule/raw events/s, Parquet cache vs raw uproot on local ROOT: "
                  f"{f['ratio_to_raw_root']:.2f}")


def print_memory(memory: list[dict[str, Any]]) -> bool:
    """Peak memory at both sizes; whether it grows with the number of files."""
    for m in memory:
        m["epoch_above_imports_mb"] = m["epoch_peak_mb"] - m["start_mb"]
        print(f"peak memory, {m['files']:3d} files ({m['train_rows']:,} training rows): "
              f"epoch {m['epoch_peak_mb']:.0f} MB "
              f"= {m['epoch_above_imports_mb']:.0f} MB above the {m['start_mb']:.0f} MB after imports; "
              f"setup scan {m['setup_peak_mb']:.0f} MB")
    growth = memory[1]["epoch_above_imports_mb"] / max(memory[0]["epoch_above_imports_mb"], 1.0)
    grows = growth > MEMORY_GROWTH_LIMIT
    print(f"ratio epoch memory above imports {MEMORY_SCALE}x files/1x files: {growth:.2f} "
          f"(memory {'GROWS' if grows else 'does not grow'} with the number of files)")
    if memory[0]["train_rows"] < memory[0]["shuffle_rows"]:
        print(f"note: the 1x run has fewer training rows than shuffle_rows ({memory[0]['shuffle_rows']:,}), so its "
              "shuffle buffer never fills; use more events per file for a fair memory comparison")
    return grows


def measure(data: Path, cache: Path, server: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Simulate into `data`, time every source, measure memory; print the report and return the figures."""
    sim_s = simulate(data, args.events_per_file)
    replicate(data, args.files)
    entries = len(PROCESSES) * args.files * args.events_per_file
    print(f"data: {len(PROCESSES) * args.files} files ({args.files} per process: {', '.join(PROCESSES)}) x "
          f"{args.events_per_file:,} events = {entries:,} entries, step size {args.step_size}, best of "
          f"{args.repeats} passes (simulating took {sim_s:.1f} s)")
    figures = local_figures(data, cache, args, entries)
    if server is not None:
        figures.append(xrootd_figures(server, args, entries))
    print_table(figures)
    memory = memory_figures(data, args)
    grows = print_memory(memory)
    print_bench_lines(figures, memory)
    return {"command": shlex.join(sys.orig_argv), "entries": entries, "sources": figures, "memory": memory,
            "memory_grows": grows}


def print_bench_lines(figures: list[dict[str, Any]], memory: list[dict[str, Any]]) -> None:
    """One `BENCH {json}` line per source, and one for memory (scripts/bench_all.py collects them)."""
    for f in figures:
        print(bench_line(f"ROOT stream: {f['source']}, DataModule vs raw", f["dm_events_per_s"],
                         f["raw_events_per_s"], f">= {GOAL_RATIO}", "events/s"))
    small, large = (m["epoch_above_imports_mb"] for m in memory)
    filled = memory[0]["train_rows"] >= memory[0]["shuffle_rows"]  # else the 1x run never fills its buffer
    print(bench_line(f"ROOT stream: epoch memory, {MEMORY_SCALE}x files vs 1x", large, small,
                     f"<= {MEMORY_GROWTH_LIMIT}" if filled else "", "MB above imports",
                     note="" if filled else "shuffle buffer not filled at 1x: no goal at this size"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """measure() in a temporary directory, served over root:// unless --skip-xrootd; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="cmsdl-bench-root-"))
    server = None if args.skip_xrootd else start_server(base)
    try:
        (base / "data").mkdir(exist_ok=True)
        return measure(base / "data", base / "cache", server, args)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    parser.add_argument("--events-per-file", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=4, help="files per process (ttbar, qcd)")
    parser.add_argument("--step-size", default="50 MB", help='work unit: entries ("20000") or bytes ("50 MB")')
    parser.add_argument("--repeats", type=int, default=3, help="passes of each side; the best is kept")
    parser.add_argument("--skip-xrootd", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small:
        args.events_per_file, args.files, args.repeats = 20_000, 1, 2
    return args


def main() -> None:
    """Run the benchmark, or (--measure-memory) one memory measurement in this fresh process."""
    args = parse_args()
    if args.measure_memory:
        measure_memory(args)
        return
    print(f"command: {shlex.join(sys.orig_argv)}")
    figures = run(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
