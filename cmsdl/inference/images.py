"""PNG event images or raw hits → image-model input, exactly as EventImageDataModule prepared them in training.

A uint8 model input takes the pixels as they are (the graph scales them); a float32 one gets
((pixels * scale) - mean) / std. Channels are the PNG's first C colour planes (1: grey, 2-3: RGB, 4: RGBA), as
`cmsdl hits2png` writes them. A PNG's size and mode are checked from its header against the model before any
pixel is decoded, so a small file declaring a huge image costs nothing. Imports numpy and Pillow (and, for hits,
cmsdl.features.images.render) only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.inference.arrays import InputError, type_name
from cmsdl.inference.metadata import ContractError

# 8-bit PNG modes as Pillow names them → colour planes
PNG_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def decode_png(image: str | Path | bytes, name: str, shape: Sequence[int]) -> np.ndarray:
    """A PNG as uint8 [C, H, W] (its first C planes); InputError naming the image if it is not a readable PNG or
    its header declares another size, or fewer channels, than `shape` = (C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else Path(image)) as png:
            check_header(png.format, png.size, png.mode, name, shape)
            pixels = np.asarray(png)
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(f"{name}: {err}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{name}: not a readable PNG image ({str(err)[:120]})") from None
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    return pixels[: shape[0]]


def check_header(image_format: str | None, size: tuple[int, int], mode: str, name: str, shape: Sequence[int]) -> None:
    """The declared format, (width, height) and mode fit the model's [C, H, W] input."""
    if image_format != "PNG":
        raise InputError(f"{name}: a {image_format} image, expected PNG")
    channels, height, width = shape
    planes = PNG_MODES.get(mode)
    if planes is None:
        raise InputError(f"{name}: PNG mode {mode!r}; expected 8-bit {', '.join(PNG_MODES)} (as hits2png writes)")
    if size != (width, height) or planes < channels:
        raise InputError(f"{name}: {planes} channel(s) of {size[0]}x{size[1]} pixels, expected {channels} of "
                         f"{width}x{height}")


def images_to_input(images: Sequence[str | Path | bytes], preprocessing: dict[str, Any],
                    input_shape: Sequence[Any], dtype: str = "float32") -> np.ndarray:
    """Check size and channels against the model, decode, and scale a batch of PNG images."""
    if len(images) == 0:
        raise InputError("images: empty; send at least one image")
    shape = [int(v) for v in input_shape[1:]]
    batch = np.empty((len(images), *shape), dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i] = decode_png(image, str(image) if not isinstance(image, bytes) else f"image #{i}", shape)
    return scale_pixels(batch, preprocessing, dtype)


def scale_pixels(batch: np.ndarray, preprocessing: dict[str, Any], dtype: str) -> np.ndarray:
    """uint8 pixels as the model takes them: unchanged for a uint8 input, else scaled and normalised floats."""
    if dtype == "uint8":
        return batch
    channels = batch.shape[1]
    scale = float(preprocessing.get("scale", 1 / 255))
    mean = np.asarray(preprocessing.get("mean", [0.0] * channels), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocessing.get("std", [1.0] * channels), dtype=np.float32).reshape(1, -1, 1, 1)
    return ((batch * scale - mean) / std).astype(np.float32)


def hits_spec(preprocessing: dict[str, Any], where: str = "model") -> Any:
    """The model's hits2png image settings as an ImageSpec; ContractError if the contract has none or bad ones."""
    from cmsdl.features.images.render import regularize_spec

    settings = {k: v for k, v in preprocessing.get("image", {}).items() if k != "channel_names"}
    if "projections" not in settings:
        raise ContractError(f"{where}: cmsdl.preprocessing.image has no hits2png settings (projections); "
                            "send PNG images instead of hits")
    try:
        return regularize_spec(settings.pop("projections"), **settings)
    except (ValueError, TypeError) as err:
        raise ContractError(f"{where}: cmsdl.preprocessing.image: {str(err)[:160]}") from None


def event_hits(event: Any, i: int, group_by: str) -> dict[str, np.ndarray]:
    """One event's hits as equal-length 1-D arrays: float x, y, z (cm) and weight, integer `group_by` ids."""
    if not isinstance(event, Mapping):
        raise InputError(f"hits[{i}]: expected an object of hit lists (x, y, z in cm), got {type_name(event)}")
    allowed = ("x", "y", "z", "weight", group_by)
    missing = [axis for axis in ("x", "y", "z") if axis not in event]
    unknown = [key for key in event if key not in allowed]
    if missing or unknown:
        raise InputError(f"hits[{i}]: " + (f"missing hit coordinate(s) {', '.join(missing)} (cm)" if missing else
                                           f"unknown field(s) {', '.join(map(repr, unknown[:5]))}")
                         + f"; expected lists x, y, z and optionally weight and {group_by}")
    hits = {key: hit_column(values, f"hits[{i}].{key}", key == group_by) for key, values in event.items()}
    lengths = {key: len(values) for key, values in hits.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{key}: {n}" for key, n in lengths.items())
        raise InputError(f"hits[{i}]: the hit lists differ in length ({counts})")
    return hits


def hit_column(values: Any, where: str, integers: bool) -> np.ndarray:
    """A list of finite numbers (integers within int64 for subdetector ids) as a 1-D array."""
    if not isinstance(values, list):
        raise InputError(f"{where}: expected a list of numbers, got {type_name(values)}")
    try:
        column = np.array(values)
    except (ValueError, TypeError, OverflowError, RecursionError):
        column = None
    kinds = "biu" if integers else "biuf"
    if column is None or column.ndim != 1 or (column.size and column.dtype.kind not in kinds):
        raise InputError(f"{where}: expected a flat list of {'integers' if integers else 'numbers'}")
    if integers:
        if column.size and (column.dtype == np.uint64 and column.max() > np.iinfo(np.int64).max):
            raise InputError(f"{where}: ids beyond the int64 range")
        return column.astype(np.int64)
    column = column.astype(np.float64)
    if not np.isfinite(column).all():
        raise InputError(f"{where}: contains NaN or infinite values")
    return column


def hits_to_input(events: Sequence[Any], preprocessing: dict[str, Any], input_shape: Sequence[Any],
                  dtype: str = "float32") -> np.ndarray:
    """Render events of hits ({"x", "y", "z"} in cm, optional "weight" and the subdetector branch) with the
    model's hits2png image settings."""
    from cmsdl.features.images.render import render_event

    try:
        spec = hits_spec(preprocessing)
    except ContractError as err:
        raise InputError(str(err)) from None
    if len(events) == 0:
        raise InputError("hits: empty; send at least one event")
    images = np.stack([render_event(event_hits(event, i, spec.group_by), spec) for i, event in enumerate(events)])
    if list(images.shape[1:]) != [int(v) for v in input_shape[1:]]:
        raise InputError(f"rendered images are {list(images.shape[1:])}, the model expects {list(input_shape[1:])}")
    return scale_pixels(images, preprocessing, dtype)
