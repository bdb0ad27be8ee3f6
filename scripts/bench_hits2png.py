"""hits2png speed: the vectorised chunk renderer vs a straightforward per-event loop, on the same events.

Both sides render the same chunks (read once with uproot, reading time printed apart) into the same uint8
images; the second figure adds PNG encoding, which both sides pay alike. Prints events/s and the ratios.

    python scripts/bench_hits2png.py --events 4000 --size 64 --projection xy,rz
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np

from cmsdl.hits.png import encode_png
from cmsdl.hits.read import iterate_chunks, regularize_mapping
from cmsdl.hits.render import regularize_spec, render_chunk, render_event
from cmsdl.hits.simulate import simulate_events, write_root


def per_event(chunks: list, spec) -> list[np.ndarray]:
    """The plain way: one event at a time, one histogram per channel."""
    out = []
    for chunk in chunks:
        for e in range(chunk.n_events):
            mask = chunk.row == e
            out.append(render_event({k: v[mask] for k, v in chunk.hits.items()}, spec))
    return out


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events in total (half qcd, half jpsi)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--projection", default="xy,rz")
    parser.add_argument("--step-size", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.root"
        half = args.events // 2
        qcd, jpsi = simulate_events("qcd", half, 1), simulate_events("jpsi", half, 2)
        events = {k: ak.concatenate([qcd[k], jpsi[k]]) if k == "hit" else np.concatenate([qcd[k], jpsi[k]]) for k in qcd}
        write_root(path, events, 0)
        mapping = regularize_mapping("events", {"x": "hit_x", "y": "hit_y", "z": "hit_z", "subdet": "hit_subdet"})
        read_s, chunks = timed(lambda: list(iterate_chunks(path, "events", mapping, args.step_size)))
    spec = regularize_spec(args.projection, size=args.size, saturation=4)
    n = sum(c.n_events for c in chunks)
    vec_s, vec_images = timed(lambda: [render_chunk(c, spec) for c in chunks])
    loop_s, loop_images = timed(per_event, chunks, spec)
    same = np.mean(np.concatenate(vec_images) == np.stack(loop_images))
    png_s, _ = timed(lambda: [encode_png(img) for batch in vec_images for img in batch])
    hits = sum(len(c.row) for c in chunks) / n
    figures = {"events": n, "hits_per_event": hits, "size": args.size, "projection": args.projection,
               "read_events_per_s": n / read_s, "vectorised_events_per_s": n / vec_s, "loop_events_per_s": n / loop_s,
               "ratio_render": loop_s / vec_s, "with_png_vectorised_events_per_s": n / (vec_s + png_s),
               "with_png_loop_events_per_s": n / (loop_s + png_s), "ratio_with_png": (loop_s + png_s) / (vec_s + png_s),
               "identical_pixels": float(same)}
    print(f"{n} events, {hits:.0f} hits/event, {args.projection} at {args.size} px (identical pixels: {same:.5f})")
    print(f"read (uproot, chunks of {args.step_size}): {figures['read_events_per_s']:10.0f} events/s")
    print(f"render, per-event loop:            {figures['loop_events_per_s']:10.0f} events/s")
    print(f"render, vectorised chunks:         {figures['vectorised_events_per_s']:10.0f} events/s")
    print(f"ratio vectorised/loop (render):    {figures['ratio_render']:10.1f}x")
    print(f"render + PNG encode, loop / vectorised: {figures['with_png_loop_events_per_s']:.0f} / "
          f"{figures['with_png_vectorised_events_per_s']:.0f} events/s, ratio {figures['ratio_with_png']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
