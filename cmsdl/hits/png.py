"""Event images as PNG files: 1 channel → greyscale, 2 → RGB (blue left empty), 3 → RGB, 4 → RGBA; uint8."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

MODES = {1: "L", 2: "RGB", 3: "RGB", 4: "RGBA"}


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of one image of shape (channels, height, width), uint8."""
    from PIL import Image

    channels = image.shape[0]
    if channels not in MODES:
        raise ValueError(f"a PNG holds 1 to 4 channels, got {channels}")
    if channels == 1:
        pixels = image[0]
    else:
        pixels = np.moveaxis(image, 0, -1)
        if channels == 2:
            pixels = np.concatenate([pixels, np.zeros_like(pixels[..., :1])], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), MODES[channels]).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def decode_png(path: str | Path, channels: int) -> np.ndarray:
    """The first `channels` channels of a PNG file, shape (channels, height, width), uint8."""
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] < channels:
        raise ValueError(f"{path}: has {pixels.shape[-1]} channels, expected {channels}")
    return np.moveaxis(pixels[..., :channels], -1, 0)


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes under a temporary name and rename: a killed run never leaves a half-written image."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
