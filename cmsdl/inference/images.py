"""PNG event images → image-model input, exactly as EventImageDataModule prepared them in training.

Input tensor: float32 [batch, C, H, W] = ((uint8 pixels * scale) - mean) / std, channels as named in the
preprocessing. Imports numpy and Pillow only.
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
                    input_shape: Sequence[Any]) -> np.ndarray:
    """Decode, check size and channels against the model, and scale a batch of PNG images."""
    channels, height, width = (int(v) for v in input_shape[1:])
    batch = np.empty((len(images), channels, height, width), dtype=np.float32)
    for i, image in enumerate(images):
        name = str(image) if not isinstance(image, bytes) else f"image #{i}"
        pixels = decode_png(image, name)
        if pixels.shape[1:] != (height, width) or pixels.shape[0] < channels:
            raise InputError(f"{name}: {pixels.shape[0]} channel(s) of {pixels.shape[1]}x{pixels.shape[2]} pixels, "
                             f"expected {channels} of {height}x{width}")
        batch[i] = pixels[:channels]
    scale = float(preprocessing.get("scale", 1 / 255))
    mean = np.asarray(preprocessing.get("mean", [0.0] * channels), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocessing.get("std", [1.0] * channels), dtype=np.float32).reshape(1, -1, 1, 1)
    return ((batch * scale - mean) / std).astype(np.float32)
