"""PNG event images or raw hits → image-model input, exactly as EventImageDataModule prepared them in training.

A uint8 model input takes the pixels as they are (the graph scales them); a float32 one gets
((pixels * scale) - mean) / std. Channels are the PNG's first C colour planes (1: grey, 2-3: RGB, 4: RGBA), as
`cmsdl hits2png` writes them. Imports numpy and Pillow (and, for hits, cmsdl.hits.render) only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmsdl.inference.predictor import InputError


def decode_png(image: str | Path | bytes, name: str) -> np.ndarray:
    """A PNG as uint8 [C, H, W]; InputError naming the image if it is not a readable PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else Path(image)) as png:
            if png.format != "PNG":
                raise InputError(f"{name}: a {png.format} image, expected PNG")
            pixels = np.asarray(png)
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{name}: not a readable PNG image ({err})") from None
    return pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)


def images_to_input(images: Sequence[str | Path | bytes], preprocessing: dict[str, Any],
                    input_shape: Sequence[Any], dtype: str = "float32") -> np.ndarray:
    """Decode, check size and channels against the model, and scale a batch of PNG images."""
    channels, height, width = (int(v) for v in input_shape[1:])
    batch = np.empty((len(images), channels, height, width), dtype=np.uint8)
    for i, image in enumerate(images):
        name = str(image) if not isinstance(image, bytes) else f"image #{i}"
        pixels = decode_png(image, name)
        if pixels.shape[1:] != (height, width) or pixels.shape[0] < channels:
            raise InputError(f"{name}: {pixels.shape[0]} channel(s) of {pixels.shape[1]}x{pixels.shape[2]} pixels, "
                             f"expected {channels} of {height}x{width}")
        batch[i] = pixels[:channels]
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


def hits_to_input(events: Sequence[dict[str, Any]], preprocessing: dict[str, Any], input_shape: Sequence[Any],
                  dtype: str = "float32") -> np.ndarray:
    """Render events of hits ({"x", "y", "z"} in cm, optional "weight" and the subdetector branch) with the
    model's hits2png image settings."""
    from cmsdl.hits.render import regularize_spec, render_event

    settings = {k: v for k, v in preprocessing.get("image", {}).items() if k != "channel_names"}
    spec = regularize_spec(settings.pop("projections"), **settings)
    batch = []
    for i, event in enumerate(events):
        missing = [axis for axis in ("x", "y", "z") if axis not in event]
        if missing:
            raise InputError(f"event #{i}: missing hit coordinate(s) {', '.join(missing)} (cm)")
        try:
            hits = {k: np.asarray(v, dtype=np.float64 if k != spec.group_by else np.int64) for k, v in event.items()}
        except (TypeError, ValueError):
            raise InputError(f"event #{i}: hit coordinates must be lists of numbers") from None
        batch.append(render_event(hits, spec))
    images = np.stack(batch)
    if list(images.shape[1:]) != [int(v) for v in input_shape[1:]]:
        raise InputError(f"rendered images are {list(images.shape[1:])}, the model expects {list(input_shape[1:])}")
    return scale_pixels(images, preprocessing, dtype)
