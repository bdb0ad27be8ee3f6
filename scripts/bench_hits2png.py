"""hits2png speed: the vectorised chunk renderer vs a straightforward per-event loop, on the same events.

Both sides render the same chunks (read once with uproot, reading time printed apart) into the same uint8
images, asserted equal pixel for pixel. The loop takes each event's hits as a slice of the chunk and fills one
np.histogram2d per channel (render_event). The second figure adds PNG encoding with the same writer
(cmsdl.features.images.png, asserted to give the same bytes, which Pillow decodes back to the images): one call per event
for the loop, one per chunk for the vectorised side. The stages take `--repeat` turns (so that the load of a
shared machine hits both sides alike); each keeps its best time. Prints events/s and the ratios.

    python scripts/bench_hits2png.py --events 4000 --size 64 --projection xy,rz
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from PIL import Image

from cmsdl.features.images.png import encode_png, encode_pngs
from cmsdl.features.images.read import HitChunk, iterate_chunks, regularize_mapping
from cmsdl.features.images.render import ImageSpec, regularize_spec, render_chunk, render_event
from cmsdl.sim.tracker import simulate_events, write_root


def event_hits(chunk: HitChunk) -> list[dict[str, np.ndarray]]:
    """Each event's hits as slices of the chunk's flat arrays (hits are stored event after event)."""
    bounds = np.r_[0, np.cumsum(chunk.counts())].tolist()
    return [{k: v[a:b] for k, v in chunk.hits.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def per_event(chunks: list[HitChunk], spec: ImageSpec) -> list[np.ndarray]:
    """The plain way: one event at a time, one histogram per channel."""
    return [render_event(hits, spec) for chunk in chunks for hits in event_hits(chunk)]


Stage = Callable[[dict[str, Any]], Any]


def best_times(repeat: int, stages: dict[str, Stage]) -> tuple[dict[str, float], dict[str, Any]]:
    """Every stage run `repeat` times, taking turns (a shared machine's load hits them alike); best times, results.

    A stage gets the results of the stages before it in the same turn.
    """
    times: dict[str, list[float]] = {name: [] for name in stages}
    results: dict[str, Any] = {}
    for _ in range(repeat):
        for name, stage in stages.items():
            start = time.perf_counter()
            results[name] = stage(results)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, results


def simulated_chunks(n_events: int, step_size: int) -> tuple[float, list[HitChunk]]:
    """Half qcd, half jpsi events written to a ROOT file and read back in chunks; returns the reading time too."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.root"
        half = n_events // 2
        qcd, jpsi = simulate_events("qcd", half, 1), simulate_events("jpsi", half, 2)
        events = {k: (ak.concatenate if k == "hit" else np.concatenate)([qcd[k], jpsi[k]]) for k in qcd}
        write_root(path, events, 0)
        mapping = regularize_mapping("events", {"x": "hit_x", "y": "hit_y", "z": "hit_z", "subdet": "hit_subdet"})
        start = time.perf_counter()
        chunks = list(iterate_chunks(path, "events", mapping, step_size))
        return time.perf_counter() - start, chunks


def check_pngs(pngs: list[bytes], images: np.ndarray) -> None:
    """Every PNG decodes with Pillow to its image (the padding blue channel of 2-channel images empty)."""
    for data, image in zip(pngs, images):
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img)
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        assert np.array_equal(np.moveaxis(pixels[..., :len(image)], -1, 0), image), "a PNG decodes to other pixels"
        assert not pixels[..., len(image):].any(), "the padding channel of a 2-channel PNG is not empty"


def measure(chunks: list[HitChunk], spec: ImageSpec, repeat: int) -> tuple[dict[str, float], list[bytes]]:
    """Best times of both renderers and both PNG runs; asserts identical images and PNG bytes. Returns the PNGs too."""
    times, out = best_times(repeat, {
        "vec": lambda _: [render_chunk(c, spec) for c in chunks],
        "loop": lambda _: per_event(chunks, spec),
        "vec_png": lambda done: [data for batch in done["vec"] for data in encode_pngs(batch)],
        "loop_png": lambda done: [encode_png(image) for image in done["loop"]]})
    images = np.concatenate(out["vec"])
    assert np.array_equal(images, np.stack(out["loop"])), "the vectorised and the per-event images differ"
    assert out["vec_png"] == out["loop_png"], "the PNG writer gives other bytes per chunk than per event"
    check_pngs(out["vec_png"], images)
    return times, out["vec_png"]


def figures_of(chunks: list[HitChunk], read_s: float, times: dict[str, float], pngs: list[bytes],
               args: argparse.Namespace) -> dict[str, Any]:
    """Events/s, PNG cost and ratios (the JSON written by --json)."""
    n = sum(c.n_events for c in chunks)
    vec, loop, vec_png, loop_png = times["vec"], times["loop"], times["vec_png"], times["loop_png"]
    return {"events": n, "hits_per_event": sum(len(c.row) for c in chunks) / n, "size": args.size,
            "projection": args.projection, "repeat": args.repeat, "read_events_per_s": n / read_s,
            "vectorised_events_per_s": n / vec, "loop_events_per_s": n / loop, "ratio_render": loop / vec,
            "png_vectorised_us_per_image": 1e6 * vec_png / n, "png_loop_us_per_image": 1e6 * loop_png / n,
            "png_bytes_per_image": sum(map(len, pngs)) / n, "with_png_vectorised_events_per_s": n / (vec + vec_png),
            "with_png_loop_events_per_s": n / (loop + loop_png), "ratio_with_png": (loop + loop_png) / (vec + vec_png),
            "identical_pixels": 1.0}


def report(f: dict[str, Any], step_size: int) -> None:
    """The figures as text."""
    print(f"{f['events']} events, {f['hits_per_event']:.0f} hits/event, {f['projection']} at {f['size']} px "
          f"(identical pixels and PNG bytes; best of {f['repeat']})")
    print(f"read (uproot, chunks of {step_size}): {f['read_events_per_s']:10.0f} events/s")
    print(f"render, per-event loop:            {f['loop_events_per_s']:10.0f} events/s")
    print(f"render, vectorised chunks:         {f['vectorised_events_per_s']:10.0f} events/s")
    print(f"ratio vectorised/loop (render):    {f['ratio_render']:10.1f}x")
    print(f"PNG encode per image, loop / vectorised: {f['png_loop_us_per_image']:.1f} / "
          f"{f['png_vectorised_us_per_image']:.1f} us ({f['png_bytes_per_image']:.0f} bytes)")
    print(f"render + PNG encode, loop / vectorised: {f['with_png_loop_events_per_s']:.0f} / "
          f"{f['with_png_vectorised_events_per_s']:.0f} events/s, ratio {f['ratio_with_png']:.1f}x")


def main() -> None:
    """Simulate, read, render and encode both ways; print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events in total (half qcd, half jpsi)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--projection", default="xy,rz")
    parser.add_argument("--step-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5, help="timed turns of every stage; the best is kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    read_s, chunks = simulated_chunks(args.events, args.step_size)
    assert all(np.all(np.diff(c.row) >= 0) for c in chunks), "hits are not stored event after event"
    spec = regularize_spec(args.projection, size=args.size, saturation=4)
    times, pngs = measure(chunks, spec, args.repeat)
    figures = figures_of(chunks, read_s, times, pngs, args)
    report(figures, args.step_size)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
