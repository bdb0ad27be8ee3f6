"""Hits → event images, a whole chunk of events at once (one sort per cache-sized block of events, no per-event loop).

Projections: `xy` (transverse; x right, y up), `rz` (longitudinal; z right, r·sign(y) up), `eta-phi`
(eta right, phi up) and `phi-rho` (phi right, transverse radius up: the transverse plane unrolled, where a track
from the beam line is a line whose slope is its curvature, 0.57 rad/m ÷ pT in GeV at 3.8 T, so a stiff track is
vertical and a soft one leans). Channels are either the projections (one channel each) or subdetector groups of one
projection. Pixel value: 255 · min(1, log1p(sum of weights) / log1p(saturation)), uint8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmsdl.errors import ConfigError, closest
from cmsdl.features.images.read import HitChunk

PROJECTIONS = {"xy": ("x", "y"), "rz": ("z", "r"), "eta-phi": ("eta", "phi"), "phi-rho": ("phi", "rho")}
# whether mirroring the image (up-down, left-right) gives an equally likely image: the radius never runs backwards
MIRROR_SYMMETRIC = {"xy": (True, True), "rz": (True, True), "eta-phi": (True, True), "phi-rho": (False, True)}
DEFAULT_RANGES = {"x": (-110.0, 110.0), "y": (-110.0, 110.0), "z": (-280.0, 280.0), "r": (-110.0, 110.0),
                  "rho": (0.0, 110.0), "eta": (-3.0, 3.0), "phi": (-np.pi, np.pi)}
DEFAULT_GROUPS = {"pixel": (0, 1), "strip": (2, 3)}
BLOCK_HITS = 1 << 15  # hits rendered together: the arrays of a block stay in the CPU cache
EDGE_MARGIN = 1e-9  # relative distance to a pixel edge under which r is recomputed with np.hypot


@dataclass(frozen=True)
class ImageSpec:
    """What an image shows: projections, channels, size (height, width), axis ranges, intensity saturation."""

    projections: tuple[str, ...]
    channels: str
    size: tuple[int, int]
    ranges: dict[str, tuple[float, float]]
    saturation: float
    groups: dict[str, tuple[int, ...]]
    group_by: str = "subdet"

    @property
    def channel_names(self) -> list[str]:
        if self.channels == "projections":
            return list(self.projections)
        return [f"{self.projections[0]}:{name}" for name in self.groups]

    def as_dict(self) -> dict:
        return {"projections": list(self.projections), "channels": self.channels, "channel_names": self.channel_names,
                "size": list(self.size), "ranges": {k: list(v) for k, v in self.ranges.items()},
                "saturation": self.saturation, "groups": {k: list(v) for k, v in self.groups.items()},
                "group_by": self.group_by}


def regularize_spec(projection: str | Sequence[str], channels: str = "projections", size: int | Sequence[int] = 64,
                    ranges: Mapping[str, Sequence[float]] | None = None, saturation: float = 8.0,
                    groups: Mapping[str, Sequence[int]] | None = None, group_by: str = "subdet") -> ImageSpec:
    """Check and normalise the image settings in one place ("xy,rz" or [xy, rz]; size 64 or [64, 128])."""
    names = [p.strip() for p in projection.split(",")] if isinstance(projection, str) else [str(p) for p in projection]
    for name in names:
        if name not in PROJECTIONS:
            hint = closest(name, PROJECTIONS)
            raise ConfigError(f"projection: unknown {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; expected some of {', '.join(PROJECTIONS)}")
    if channels not in ("projections", "subdetectors"):
        raise ConfigError(f"channels: got {channels!r}, expected 'projections' or 'subdetectors'")
    if channels == "subdetectors" and len(names) != 1:
        raise ConfigError(f"channels=subdetectors needs exactly one projection, got {names}")
    hw = (int(size), int(size)) if isinstance(size, (int, float, str)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 4 or max(hw) > 4096:
        raise ConfigError(f"size: expected an image size in pixels (4-4096) or [height, width], got {size!r}")
    merged = dict(DEFAULT_RANGES) | {k: tuple(float(x) for x in v) for k, v in (ranges or {}).items()}
    for axis, (lo, hi) in merged.items():
        if not lo < hi:
            raise ConfigError(f"ranges.{axis}: expected [low, high] with low < high, got {[lo, hi]}")
    if saturation <= 0:
        raise ConfigError(f"saturation: expected a positive hit weight, got {saturation}")
    groups = {k: tuple(int(x) for x in v) for k, v in (groups or DEFAULT_GROUPS).items()}
    return ImageSpec(tuple(names), channels, hw, merged, float(saturation), groups, group_by)


def coordinates(hits: Mapping[str, np.ndarray], axis: str) -> np.ndarray:
    """One coordinate of every hit, computed from x/y/z when the file does not hold it."""
    if axis in hits:
        return hits[axis]
    if axis not in ("r", "rho", "eta", "phi"):
        raise ConfigError(f"projection axis {axis!r} needs branches x, y, z or {axis}")
    x, y = hits["x"], hits["y"]
    if axis == "phi":
        return np.arctan2(y, x)
    rho = np.hypot(x, y)
    if axis == "rho":
        return rho
    if axis == "r":
        return np.where(y >= 0, rho, -rho)
    return np.arcsinh(hits["z"] / np.maximum(rho, 1e-9))


def floored(values: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """floor((values - lo) · n / (hi - lo)) in the dtype of `values`: the pixel column, as a float, of each value."""
    scaled = values - lo
    scaled *= n / (hi - lo)
    return np.floor(scaled, out=scaled)


def floored_radius(hits: Mapping[str, np.ndarray], lo: float, hi: float, n: int) -> np.ndarray:
    """floored(coordinates(hits, "r"), ...), with sqrt(x² + y²) for np.hypot except where they could differ.

    The two radii differ by a few units in the last place at most, so only a pixel index that lies within
    EDGE_MARGIN of a pixel edge (or comes from a tiny, underflowing or non-finite radius) is redone with np.hypot.
    """
    x, y = hits["x"], hits["y"]
    if "r" in hits or x.dtype != np.float64 or y.dtype != np.float64:
        return floored(coordinates(hits, "r"), lo, hi, n)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x * x
        sign = y * y
        scaled += sign
        np.sqrt(scaled, out=scaled)
        doubtful = scaled < 1e-150
        np.add(y, 0.0, out=sign)
        np.copysign(scaled, sign, out=scaled)
        scaled -= lo
        scaled *= n / (hi - lo)
        pixel = np.floor(scaled)
        scaled -= pixel
    margin = EDGE_MARGIN * (n + 2 + abs(lo) * n / (hi - lo))
    doubtful |= ~((scaled >= margin) & (scaled <= 1 - margin))
    redo = np.flatnonzero(doubtful)
    if len(redo):
        pixel[redo] = floored(coordinates({"x": x[redo], "y": y[redo]}, "r"), lo, hi, n)
    return pixel


def axis_pixels(hits: Mapping[str, np.ndarray], axis: str, lo: float, hi: float, n: int) -> np.ndarray:
    """The floored pixel coordinate of every hit along one axis of a projection."""
    if axis == "r":
        return floored_radius(hits, lo, hi, n)
    return floored(coordinates(hits, axis), lo, hi, n)


def subdetector_channels(hits: Mapping[str, np.ndarray], spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Image channel of each hit from its subdetector id, and whether the id belongs to a group."""
    ids = hits.get(spec.group_by)
    if ids is None:
        raise ConfigError(f"channels=subdetectors needs the {spec.group_by!r} branch mapped (branches.{spec.group_by})")
    lookup = np.full(int(max(max(g) for g in spec.groups.values()) + 1), -1, np.int64)
    for c, members in enumerate(spec.groups.values()):
        lookup[list(members)] = c
    ids = ids.astype(np.int64)
    known = (ids >= 0) & (ids < len(lookup))
    channel = np.where(known, lookup[np.clip(ids, 0, len(lookup) - 1)], -1)
    return np.maximum(channel, 0), channel >= 0


def hit_blocks(row: np.ndarray, target: int = BLOCK_HITS) -> list[tuple[int, int]]:
    """Hit ranges of whole events of about `target` hits (cache-sized); one range when rows are not in order."""
    n = len(row)
    if n <= target or not np.all(row[1:] >= row[:-1]):
        return [(0, n)]
    cuts = np.searchsorted(row, row[target::target], side="left")
    edges = np.unique(np.r_[0, cuts, n])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def flat_pixels(hits: Mapping[str, np.ndarray], row: np.ndarray, spec: ImageSpec, outside: int) -> np.ndarray:
    """Flat image index (event, channel, image row, column) of every hit of every projection; `outside` if off range."""
    h, w = spec.size
    dtype = np.int32 if outside < 2**31 else np.int64
    base = row.astype(dtype) * (len(spec.channel_names) * h * w) + (h - 1) * w
    ok = None
    if spec.channels == "subdetectors":
        channel, ok = subdetector_channels(hits, spec)
        base += channel.astype(dtype) * (h * w)
    n = len(row)
    flat = np.empty(len(spec.projections) * n, dtype)
    for p, name in enumerate(spec.projections):
        u_axis, v_axis = PROJECTIONS[name]
        u = axis_pixels(hits, u_axis, *spec.ranges[u_axis], w)
        v = axis_pixels(hits, v_axis, *spec.ranges[v_axis], h)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        if ok is not None:
            inside &= ok
        part = flat[p * n:(p + 1) * n]
        with np.errstate(invalid="ignore"):
            v *= -w
            v += u
            np.copyto(part, v, casting="unsafe")
        part += base
        if p:
            part += p * h * w
        part[~inside] = outside
    return flat


def count_lut(saturation: float) -> np.ndarray | None:
    """to_uint8 of hit counts 0, 1, ... up to the first count that gives 255 (None for a huge saturation)."""
    if saturation > 1e4:
        return None
    lut = to_uint8(np.arange(int(np.ceil(saturation)) + 2, dtype=np.float64), saturation)
    return lut if lut[-1] == 255 else None


def count_by_pixel(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pixel indices (sorted) and the number of hits in each."""
    ordered = np.sort(flat)
    first = np.empty(len(ordered), bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.empty_like(starts)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1:] = len(ordered) - starts[-1:]
    return ordered[starts], counts


def pixel_values(flat: np.ndarray, weights: np.ndarray | None, outside: int, saturation: float,
                 lut: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty pixels of a block of events and their uint8 values; hits marked `outside` are left out."""
    if weights is not None:
        keep = flat != outside
        pixels, sums = sum_by_pixel(flat[keep], weights[keep])
        return pixels, to_uint8(sums, saturation)
    pixels, counts = count_by_pixel(flat)
    if len(pixels) and pixels[-1] == outside:
        pixels, counts = pixels[:-1], counts[:-1]
    if lut is None:
        return pixels, to_uint8(counts.astype(np.float64), saturation)
    return pixels, lut[np.minimum(counts, len(lut) - 1)]


def render_chunk(chunk: HitChunk, spec: ImageSpec) -> np.ndarray:
    """All events of a chunk as uint8 images, shape (events, channels, height, width).

    Cache-sized blocks of whole events; in each, one flat index per hit and projection, sorted once and counted
    (or weights summed) per pixel: only the non-empty pixels (a few percent of a sparse image) are touched.
    """
    h, w = spec.size
    n_channels = len(spec.channel_names)
    images = np.zeros(chunk.n_events * n_channels * h * w, np.uint8)
    lut = count_lut(spec.saturation)
    for start, stop in hit_blocks(chunk.row):
        hits = {k: v[start:stop] for k, v in chunk.hits.items()}
        flat = flat_pixels(hits, chunk.row[start:stop], spec, len(images))
        weight = hits.get("weight")
        weights = None if weight is None else np.tile(weight.astype(np.float64), len(spec.projections))
        pixels, values = pixel_values(flat, weights, len(images), spec.saturation, lut)
        images[pixels.astype(np.intp)] = values
    return images.reshape(chunk.n_events, n_channels, h, w)


def sum_by_pixel(flat: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pixel indices (sorted) and the summed weight of each, added in hit order."""
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    return ordered[starts], np.add.reduceat(weights[order], starts) if len(starts) else np.zeros(0)


def to_uint8(sums: np.ndarray, saturation: float) -> np.ndarray:
    """Summed hit weights → 0..255 on a log scale that saturates at `saturation`."""
    scaled = np.log1p(np.maximum(sums, 0)) * (255.0 / np.log1p(saturation))
    return np.minimum(np.rint(scaled), 255).astype(np.uint8)


def render_event(hits: Mapping[str, np.ndarray], spec: ImageSpec) -> np.ndarray:
    """One event with np.histogram2d per channel: the plain reference that render_chunk must match."""
    h, w = spec.size
    image = np.zeros((len(spec.channel_names), h, w))
    weight = hits.get("weight", np.ones(len(next(iter(hits.values())))))
    for p, name in enumerate(spec.projections):
        u_axis, v_axis = PROJECTIONS[name]
        u, v = coordinates(hits, u_axis), coordinates(hits, v_axis)
        for c in range(len(spec.channel_names)) if spec.channels == "subdetectors" else [p]:
            if spec.channels == "subdetectors":
                keep = np.isin(hits[spec.group_by], list(spec.groups.values())[c])
            else:
                keep = np.ones(len(u), bool)
            (ulo, uhi), (vlo, vhi) = spec.ranges[u_axis], spec.ranges[v_axis]
            inside = keep & (u >= ulo) & (u < uhi) & (v >= vlo) & (v < vhi)
            hist, _, _ = np.histogram2d(v[inside], u[inside], bins=(h, w), range=((vlo, vhi), (ulo, uhi)),
                                        weights=weight[inside])
            image[c] = hist[::-1]
    return to_uint8(image, spec.saturation)
