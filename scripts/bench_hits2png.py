"""hits2png speed: the vectorised renderer vs a per-event loop, and `cmsdl hits2png` end to end vs its I/O limit.

Simulated events (half jpsi, half qcd, as `cmsdl simulate` writes them) in two ROOT files. Stages, each taking
`--repeat` turns in alternation (the load of a shared machine hits all alike), best time kept:
- read: raw `uproot.iterate` of the branches hits2png reads (decompression; the floor of reading);
- render: per-event loop (one np.histogram2d per channel, render_event) vs vectorised chunks (render_chunk),
  asserted to give identical pixels;
- encode: the PNG writer (cmsdl.features.images.png) per event vs per chunk, asserted to give the same bytes,
  which Pillow decodes back to the images;
- end to end: `hits2png(cfg)` in this process (plan, read, render, encode, atomic writes, parts, manifest) with
  `workers=1` and `threads=0` or `--threads`, then `--workers` processes (threads=0); every image it writes is asserted
  bit-identical to the PNG of the vectorised stage.
The limit of the end-to-end figure is reading plus encoding alone (events / (read time + encode time)); the goal is
half of it. One table with ratios and goals; the load average before and after (a shared machine: say so).

    python scripts/bench_hits2png.py --events 4000 --size 64 --projection xy,rz
    python scripts/bench_hits2png.py --small    # scripts/bench_all.py: 2000 events, best of 3, workers 1 vs 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import uproot
from PIL import Image

from bench_all import bench_line

from cmsdl.config import compose_run_config
from cmsdl.features.images.convert import hits2png
from cmsdl.features.images.png import encode_png, encode_pngs
from cmsdl.features.images.read import HitChunk, iterate_chunks, regularize_mapping
from cmsdl.features.images.render import ImageSpec, regularize_spec, render_chunk, render_event
from cmsdl.features.images.write import write_file_atomic
from cmsdl.sim.tracker import simulate_events, write_root

BRANCHES = {"x": "hit_x", "y": "hit_y", "z": "hit_z", "layer": "hit_layer", "subdet": "hit_subdet"}  # the config's
Stage = Callable[[dict[str, Any]], Any]


def event_hits(chunk: HitChunk) -> list[dict[str, np.ndarray]]:
    """Each event's hits as slices of the chunk's flat arrays (hits are stored event after event)."""
    bounds = np.r_[0, np.cumsum(chunk.counts())].tolist()
    return [{k: v[a:b] for k, v in chunk.hits.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def per_event(chunks: list[HitChunk], spec: ImageSpec) -> list[np.ndarray]:
    """The plain way: one event at a time, one histogram per channel."""
    return [render_event(hits, spec) for chunk in chunks for hits in event_hits(chunk)]


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (hits2png's workers)."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def best_times(repeat: int, stages: dict[str, Stage]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Every stage run `repeat` times, taking turns (a shared machine's load hits them alike); the best wall-clock
    and the best CPU times, and the results. A stage gets the results of the stages before it in the same turn.
    """
    wall: dict[str, list[float]] = {name: [] for name in stages}
    cpu: dict[str, list[float]] = {name: [] for name in stages}
    results: dict[str, Any] = {}
    for _ in range(repeat):
        for name, stage in stages.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            results[name] = stage(results)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    return {name: min(t) for name, t in wall.items()}, {name: min(t) for name, t in cpu.items()}, results


def simulated_files(folder: Path, n_events: int) -> list[Path]:
    """Half jpsi, half qcd events, one ROOT file each (the file names give hits2png the class)."""
    paths = []
    for seed, process in ((2, "jpsi"), (1, "qcd")):
        paths.append(folder / f"{process}_0.root")
        write_root(paths[-1], simulate_events(process, n_events // 2, seed), 0)
    return paths


def read_chunks(files: list[Path], step_size: int) -> list[HitChunk]:
    mapping = regularize_mapping("events", BRANCHES)
    return [chunk for path in files for chunk in iterate_chunks(path, "events", mapping, step_size)]


def decompress(files: list[Path], step_size: int) -> int:
    """Raw uproot.iterate of the branches hits2png reads, in the same chunks; returns the number of events."""
    n = 0
    for path in files:
        with uproot.open(path) as f:
            for batch in f["events"].iterate(filter_name=list(BRANCHES.values()), step_size=step_size, library="ak"):
                n += len(batch)
    return n


def check_pngs(pngs: list[bytes], images: np.ndarray) -> None:
    """Every PNG decodes with Pillow to its image (the padding blue channel of 2-channel images empty)."""
    for data, image in zip(pngs, images):
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img)
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        assert np.array_equal(np.moveaxis(pixels[..., :len(image)], -1, 0), image), "a PNG decodes to other pixels"
        assert not pixels[..., len(image):].any(), "the padding channel of a 2-channel PNG is not empty"


def end_to_end(folder: Path, args: argparse.Namespace, workers: int, threads: int) -> Stage:
    """A stage that runs hits2png(cfg) into a fresh folder and returns {relative path: PNG bytes} in entry order."""
    cfg = compose_run_config("hits2png", [
        f"input={folder}/*.root", f"size={args.size}", f"projection=[{args.projection}]", f"step_size={args.step_size}",
        f"workers={workers}", f"threads={threads}", "progress=false", "compress_level=1", "saturation=4",
        f"branches.layer={BRANCHES['layer']}", f"branches.subdet={BRANCHES['subdet']}"], output_dir=folder / "run")

    def stage(_: dict[str, Any]) -> list[bytes]:
        out = folder / f"out-{workers}-{threads}"
        shutil.rmtree(out, ignore_errors=True)
        cfg.out = str(out)
        with open(os.devnull, "w") as quiet, redirect_stdout(quiet):
            hits2png(cfg)
        rows = (out / "manifest.csv").read_text().splitlines()[1:]
        return [(out / row.split(",", 1)[0]).read_bytes() for row in rows]

    return stage


def redirect_stdout(target: Any) -> Any:
    from contextlib import redirect_stdout as redirect

    return redirect(target)


def measure(folder: Path, files: list[Path], chunks: list[HitChunk], spec: ImageSpec,
            args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float], list[bytes]]:
    """Best wall-clock and CPU times of every stage; asserts identical images, PNG bytes and written files.
    Returns the PNGs too."""
    stages: dict[str, Stage] = {
        "read": lambda _: decompress(files, args.step_size),
        "vec": lambda _: [render_chunk(c, spec) for c in chunks],
        "loop": lambda _: per_event(chunks, spec),
        "vec_png": lambda done: [data for batch in done["vec"] for data in encode_pngs(batch)],
        "loop_png": lambda done: [encode_png(image) for image in done["loop"]],
        "write": lambda done: write_all(folder / "written", done["vec_png"]),
        "e2e_threads_0": end_to_end(folder, args, 1, 0),
        "e2e_threads": end_to_end(folder, args, 1, args.threads),
    }
    for workers in args.workers:
        stages[f"e2e_workers_{workers}"] = end_to_end(folder, args, workers, 0)
    times, cpu, out = best_times(args.repeat, stages)
    images = np.concatenate(out["vec"])
    assert out["read"] == len(images), "uproot read another number of events"
    assert np.array_equal(images, np.stack(out["loop"])), "the vectorised and the per-event images differ"
    assert out["vec_png"] == out["loop_png"], "the PNG writer gives other bytes per chunk than per event"
    check_pngs(out["vec_png"], images)
    for name in stages:
        if name.startswith("e2e"):
            assert out[name] == out["vec_png"], f"{name}: hits2png wrote other bytes than the PNG writer gives"
    return times, cpu, out["vec_png"]


def zlib_streams() -> dict[str, Callable[[bytes], bytes]]:
    """Other deflate implementations that are importable here, each a function raw bytes → zlib stream."""
    import importlib
    import zlib

    def zlib_with(level: int, strategy: int, window: int = 15, memory: int = 8) -> Callable[[bytes], bytes]:
        def compress(raw: bytes) -> bytes:
            stream = zlib.compressobj(level, zlib.DEFLATED, window, memory, strategy)
            return stream.compress(raw) + stream.flush()
        return compress

    found = {"zlib 1 run-length (used)": zlib_with(1, zlib.Z_RLE), "zlib 1 default strategy": zlib_with(1, 0),
             "zlib 1 run-length, memLevel 1": zlib_with(1, zlib.Z_RLE, 15, 1)}
    for module, name, make in (
            ("zlib_ng.zlib_ng", "zlib-ng 1 run-length", lambda m: lambda raw: (lambda c: c.compress(raw) + c.flush())(
                m.compressobj(1, m.DEFLATED, 15, 8, m.Z_RLE))),
            ("deflate", "libdeflate 1", lambda m: lambda raw: m.zlib_compress(raw, 1)),
            ("isal.isal_zlib", "ISA-L 1", lambda m: lambda raw: m.compress(raw, 1)),
            ("isal.isal_zlib", "ISA-L 0", lambda m: lambda raw: m.compress(raw, 0))):
        try:
            found[name] = make(importlib.import_module(module))
        except ImportError:
            print(f"encoders: {module} is not installed, {name} left out")
    return found


def compare_encoders(images: np.ndarray, repeat: int) -> list[tuple[str, float, float, bool]]:
    """CPU us and bytes per image of each deflate implementation on the same scanlines, and whether its PNGs
    equal the writer's bytes (else: Pillow decodes them to the same pixels, asserted)."""
    import struct
    import zlib

    from cmsdl.features.images.png import COLOR_TYPES, IEND, MODES, SIGNATURE, png_chunk, scanlines

    raws = [row.tobytes() for row in scanlines(images)]
    header = SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", images.shape[3], images.shape[2], 8,
                                                        COLOR_TYPES[MODES[images.shape[1]]], 0, 0, 0))
    reference = encode_pngs(images)
    rows = []
    for name, compress in zlib_streams().items():
        best = float("inf")
        for _ in range(repeat):
            start = time.process_time()
            streams = [compress(raw) for raw in raws]
            best = min(best, time.process_time() - start)
        pngs = [header + png_chunk(b"IDAT", stream) + IEND for stream in streams]
        assert all(zlib.decompress(s) == raw for s, raw in zip(streams, raws)), f"{name}: another stream"
        check_pngs(pngs, images)
        rows.append((name, 1e6 * best / len(raws), sum(map(len, pngs)) / len(raws), pngs == reference))
    return rows


def write_all(folder: Path, pngs: list[bytes]) -> None:
    """Every PNG written atomically as hits2png does (temporary name, rename), in one folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for k, data in enumerate(pngs):
        write_file_atomic(str(folder / f"{k:07d}.png"), data, "bench")


def figures_of(chunks: list[HitChunk], times: dict[str, float], cpu: dict[str, float], pngs: list[bytes],
               args: argparse.Namespace, load: tuple[str, str]) -> dict[str, Any]:
    """Events/s, costs per event and ratios (the JSON written by --json); `cpu_*`: the same from CPU time, steadier
    than wall-clock time on a busy machine (not for the worker scaling)."""
    n = sum(c.n_events for c in chunks)
    t = times
    e2e = "e2e_threads"
    cpu_limit = cpu["read"] + cpu["vec_png"]
    rate = {name: n / seconds for name, seconds in t.items()}
    limit = n / (t["read"] + t["vec_png"])
    one = rate["e2e_threads_0"]
    return {"events": n, "hits_per_event": sum(len(c.row) for c in chunks) / n, "size": args.size,
            "projection": args.projection, "repeat": args.repeat, "threads": args.threads, "cpus": os.cpu_count(),
            "load_before": load[0], "load_after": load[1], "png_bytes_per_image": sum(map(len, pngs)) / n,
            "us_per_event": {name: 1e6 * seconds / n for name, seconds in t.items()},
            "cpu_us_per_event": {name: 1e6 * seconds / n for name, seconds in cpu.items()},
            "cpu_ratio_render": cpu["loop"] / cpu["vec"],
            "cpu_ratio_with_png": (cpu["loop"] + cpu["loop_png"]) / (cpu["vec"] + cpu["vec_png"]),
            "cpu_ratio_e2e_threads_0_to_limit": cpu_limit / cpu["e2e_threads_0"], "cpu_ratio_e2e_to_limit": cpu_limit / cpu[e2e],
            "read_events_per_s": rate["read"], "vectorised_events_per_s": rate["vec"], "loop_events_per_s": rate["loop"],
            "ratio_render": t["loop"] / t["vec"],
            "with_png_vectorised_events_per_s": n / (t["vec"] + t["vec_png"]),
            "with_png_loop_events_per_s": n / (t["loop"] + t["loop_png"]),
            "ratio_with_png": (t["loop"] + t["loop_png"]) / (t["vec"] + t["vec_png"]),
            "limit_events_per_s": limit, "e2e_threads_0_events_per_s": rate["e2e_threads_0"],
            "e2e_threads_events_per_s": rate[e2e],
            "e2e_events_per_s": {1: one} | {w: rate[f"e2e_workers_{w}"] for w in args.workers},
            "ratio_e2e_to_limit": rate[e2e] / limit, "ratio_e2e_threads_0_to_limit": rate["e2e_threads_0"] / limit,
            "scaling": {w: rate[f"e2e_workers_{w}"] / one for w in args.workers}, "identical_pixels": 1.0}


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    """One table: what, reference, ours, ratio, goal."""
    us = f["us_per_event"]
    print(f"{f['events']} events, {f['hits_per_event']:.0f} hits/event, {f['projection']} at {f['size']} px, chunks of "
          f"{args.step_size}, {f['png_bytes_per_image']:.0f} bytes/PNG; best of {f['repeat']}; {f['cpus']} CPUs, "
          f"load average {f['load_before']} before, {f['load_after']} after")
    print("identical pixels both ways; PNG bytes equal per event, per chunk and in every file hits2png wrote")
    for what, cost in (("wall-clock", us), ("CPU", f["cpu_us_per_event"])):
        print(f"{what} us per event: read {cost['read']:.1f}, render {cost['vec']:.1f} (loop {cost['loop']:.1f}), "
              f"encode {cost['vec_png']:.1f}, write files {cost['write']:.1f}; hits2png end to end "
              f"{cost['e2e_threads_0']:.1f} (threads=0)")
    rows = [("render (events/s)", "per-event loop", f["loop_events_per_s"], "vectorised", f["vectorised_events_per_s"],
             f["ratio_render"], f["cpu_ratio_render"], ">= 20x"),
            ("render + PNG encode (events/s)", "per-event loop", f["with_png_loop_events_per_s"], "vectorised",
             f["with_png_vectorised_events_per_s"], f["ratio_with_png"], f["cpu_ratio_with_png"], ""),
            ("hits2png end to end (events/s)", "read + encode alone", f["limit_events_per_s"],
             "workers=1 threads=0", f["e2e_threads_0_events_per_s"], f["ratio_e2e_threads_0_to_limit"],
             f["cpu_ratio_e2e_threads_0_to_limit"], ">= 0.5"),
            ("hits2png end to end (events/s)", "read + encode alone", f["limit_events_per_s"],
             f"workers=1 threads={args.threads}", f["e2e_threads_events_per_s"], f["ratio_e2e_to_limit"],
             f["cpu_ratio_e2e_to_limit"], ">= 0.5")]
    rows += [("hits2png scaling (events/s)", "workers=1 threads=0", f["e2e_events_per_s"][1], f"workers={w} threads=0",
              f["e2e_events_per_s"][w], f["scaling"][w], None, f"~{w}x (<= CPUs)") for w in args.workers]
    print(f"{'stage':31s} {'reference':20s} {'events/s':>8s}  {'ours':20s} {'events/s':>8s} {'ratio':>6s} "
          f"{'by CPU':>6s}  goal")
    for stage, ref, ref_rate, ours, our_rate, ratio, cpu_ratio, goal in rows:
        by_cpu = "" if cpu_ratio is None else f"{cpu_ratio:.2f}x"
        print(f"{stage:31s} {ref:20s} {ref_rate:8.0f}  {ours:20s} {our_rate:8.0f} {ratio:5.2f}x {by_cpu:>6s}  {goal}")
    print(f"ratio vectorised/loop (render): {f['ratio_render']:.1f}x; end to end / limit: {f['ratio_e2e_to_limit']:.2f}")
    print_bench_lines(f, args)


def print_bench_lines(f: dict[str, Any], args: argparse.Namespace) -> None:
    """The BENCH lines of scripts/bench_all.py: end to end vs the I/O limit, render vs the loop, worker scaling."""
    events = f"{f['events']} events, {f['size']} px"
    print(bench_line(f"hits2png end to end (workers=1 threads={args.threads}) vs read + encode alone ({events})",
                     f["e2e_threads_events_per_s"], f["limit_events_per_s"], ">= 0.5", "events/s"))
    print(bench_line(f"hits2png render: vectorised vs per-event loop ({events})", f["vectorised_events_per_s"],
                     f["loop_events_per_s"], ">= 20", "events/s"))
    for w in args.workers:
        print(bench_line(f"hits2png scaling: workers={w} vs workers=1 (threads=0)", f["e2e_events_per_s"][w],
                         f["e2e_events_per_s"][1], "", "events/s",
                         note=f"goal near-linear (~{w}x) up to the {f['cpus']} CPUs, on a quiet machine"))


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    """Simulate, read, render, encode and convert; print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events in total (half qcd, half jpsi)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--projection", default="xy,rz")
    parser.add_argument("--step-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5, help="timed turns of every stage; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="hits2png's threads for the second end-to-end row")
    parser.add_argument("--workers", default=str(os.cpu_count() or 1),
                        help="hits2png worker counts (threads=0) to compare with workers=1, e.g. 2,4 (default: the CPUs)")
    parser.add_argument("--encoders", action="store_true",
                        help="also time other deflate libraries if installed (zlib-ng, libdeflate, ISA-L) on the images")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--small", action="store_true", help="the quick configuration of scripts/bench_all.py")
    args = parser.parse_args()
    if args.small:
        args.events, args.repeat, args.workers = 2000, 3, "2"
    args.workers = [w for w in dict.fromkeys(int(w) for w in args.workers.split(",")) if w > 1]
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_hits2png-") as tmp:
        folder = Path(tmp)
        files = simulated_files(folder, args.events)
        chunks = read_chunks(files, args.step_size)
        assert all(np.all(np.diff(c.row) >= 0) for c in chunks), "hits are not stored event after event"
        spec = regularize_spec(args.projection, size=args.size, saturation=4)
        times, cpu, pngs = measure(folder, files, chunks, spec, args)
    figures = figures_of(chunks, times, cpu, pngs, args, (load_before, load_average()))
    report(figures, args)
    if args.encoders:
        images = np.concatenate([render_chunk(c, spec) for c in chunks])
        print(f"{'deflate implementation':32s} {'CPU us/image':>12s} {'bytes/image':>11s}  same bytes as the writer")
        for name, us, size, same in compare_encoders(images, args.repeat):
            print(f"{name:32s} {us:12.1f} {size:11.0f}  {'yes' if same else 'no (same pixels)'}")
            figures.setdefault("encoders", {})[name] = {"cpu_us_per_image": us, "bytes_per_image": size, "same_bytes": same}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
