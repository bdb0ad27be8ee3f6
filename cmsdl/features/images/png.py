"""Event images as PNG files: 1 channel → greyscale, 2 → RGB (blue left empty), 3 → RGB, 4 → RGBA; uint8.

Written with zlib directly (8-bit samples, no row filter): at compress_level 1 (the default) with zlib's
run-length strategy, the fastest and, on mostly empty hit images, also the smallest; other levels use zlib's
default strategy. Read back with Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MODES = {1: "L", 2: "RGB", 3: "RGB", 4: "RGBA"}
COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


IEND = png_chunk(b"IEND", b"")


def scanlines(images: np.ndarray) -> np.ndarray:
    """PNG rows of a batch (images, channels, height, width): filter byte 0, then the interleaved samples."""
    n, channels, h, w = images.shape
    if channels not in MODES:
        raise ValueError(f"a PNG holds 1 to 4 channels, got {channels}")
    samples = len(MODES[channels])
    rows = np.zeros((n, h, 1 + w * samples), np.uint8)
    for k in range(channels):
        rows[:, :, 1 + k::samples] = images[:, k]
    return rows


def encode_pngs(images: np.ndarray, compress_level: int = 1) -> list[bytes]:
    """PNG bytes of every image of a batch of shape (images, channels, height, width), uint8."""
    rows = scanlines(images)
    h, w = images.shape[2:]
    color_type = COLOR_TYPES[MODES[images.shape[1]]]
    header = SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    strategy = zlib.Z_RLE if compress_level == 1 else zlib.Z_DEFAULT_STRATEGY
    out = []
    for raw in rows:
        stream = zlib.compressobj(compress_level, zlib.DEFLATED, zlib.MAX_WBITS, 8, strategy)
        out.append(header + png_chunk(b"IDAT", stream.compress(raw) + stream.flush()) + IEND)
    return out


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of one image of shape (channels, height, width), uint8."""
    return encode_pngs(image[None], compress_level)[0]


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
