"""Hits → event images, a whole chunk of events at once (one np.bincount per chunk, no per-event loop).

Projections: `xy` (transverse; x right, y up), `rz` (longitudinal; z right, r·sign(y) up) and `eta-phi`
(eta right, phi up). Channels are either the projections (one channel each) or subdetector groups of one
projection. Pixel value: 255 · min(1, log1p(sum of weights) / log1p(saturation)), uint8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmsdl.errors import ConfigError, closest
from cmsdl.hits.read import Chunk

PROJECTIONS = {"xy": ("x", "y"), "rz": ("z", "r"), "eta-phi": ("eta", "phi")}
DEFAULT_RANGES = {"x": (-110.0, 110.0), "y": (-110.0, 110.0), "z": (-280.0, 280.0), "r": (-110.0, 110.0),
                  "eta": (-3.0, 3.0), "phi": (-np.pi, np.pi)}
DEFAULT_GROUPS = {"pixel": (0, 1), "strip": (2, 3)}


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
    x, y, z = hits["x"], hits["y"], hits["z"]
    rho = np.hypot(x, y)
    if axis == "r":
        return np.where(y >= 0, rho, -rho)
    if axis == "eta":
        return np.arcsinh(z / np.maximum(rho, 1e-9))
    if axis == "phi":
        return np.arctan2(y, x)
    raise ConfigError(f"projection axis {axis!r} needs branches x, y, z or {axis}")


def pixel_index(values: np.ndarray, lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel column of each value and whether it lies inside [lo, hi)."""
    index = np.floor((values - lo) * (n / (hi - lo))).astype(np.int64)
    return np.clip(index, 0, n - 1), (index >= 0) & (index < n)


def channel_of_hits(chunk: Chunk, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """(projection, channel) per image channel: for projections one row per hit, for subdetectors a lookup."""
    if spec.channels == "projections":
        return np.zeros(len(chunk.row), np.int64), np.ones(len(chunk.row), bool)
    ids = chunk.hits.get(spec.group_by)
    if ids is None:
        raise ConfigError(f"channels=subdetectors needs the {spec.group_by!r} branch mapped (branches.{spec.group_by})")
    lookup = np.full(int(max(max(g) for g in spec.groups.values()) + 1), -1, np.int64)
    for c, members in enumerate(spec.groups.values()):
        lookup[list(members)] = c
    ids = ids.astype(np.int64)
    known = (ids >= 0) & (ids < len(lookup))
    channel = np.where(known, lookup[np.clip(ids, 0, len(lookup) - 1)], -1)
    return np.maximum(channel, 0), channel >= 0


def render_chunk(chunk: Chunk, spec: ImageSpec) -> np.ndarray:
    """All events of a chunk as uint8 images, shape (events, channels, height, width).

    The flat pixel index of every hit of every projection is sorted once and summed per pixel; only the
    non-empty pixels (a few percent of a sparse event image) are touched, never a dense float histogram.
    """
    h, w = spec.size
    n_channels = len(spec.channel_names)
    weight = chunk.hits.get("weight")
    sub_channel, sub_ok = channel_of_hits(chunk, spec)
    flat_parts, keep_parts = [], []
    for p, name in enumerate(spec.projections):
        u_axis, v_axis = PROJECTIONS[name]
        col, ok_u = pixel_index(coordinates(chunk.hits, u_axis), *spec.ranges[u_axis], w)
        row, ok_v = pixel_index(coordinates(chunk.hits, v_axis), *spec.ranges[v_axis], h)
        channel = sub_channel if spec.channels == "subdetectors" else p
        flat_parts.append(((chunk.row * n_channels + channel) * h + (h - 1 - row)) * w + col)
        keep_parts.append(ok_u & ok_v & sub_ok)
    keep = np.concatenate(keep_parts)
    size = chunk.n_events * n_channels * h * w
    flat = np.concatenate(flat_parts)[keep].astype(np.int32 if size < 2**31 else np.int64)
    weights = None if weight is None else np.tile(weight.astype(np.float64), len(spec.projections))[keep]
    pixels, sums = sum_by_pixel(flat, weights)
    images = np.zeros(size, np.uint8)
    images[pixels] = to_uint8(sums, spec.saturation)
    return images.reshape(chunk.n_events, n_channels, h, w)


def sum_by_pixel(flat: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pixel indices and the summed weight (or hit count) of each: a sort, not a dense histogram."""
    order = np.argsort(flat, kind="stable") if weights is not None else None
    ordered = flat[order] if order is not None else np.sort(flat)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    if weights is None:
        return ordered[starts], np.diff(np.r_[starts, len(ordered)]).astype(np.float64)
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
