"""Writing event images: PNG encoding and atomic file writes on a few threads, beside the rendering thread.

zlib and file writes release the GIL, so `threads` threads encode and write one slice of images while the calling
thread renders the next. Each image is written under a temporary name beside it and renamed into place (a killed
run never leaves a half-written image; `manifest.remove_stale_temporaries` cleans up). Must not import convert.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from cmsdl.features.images.png import encode_pngs

OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def write_file_atomic(target: str, data: bytes, token: str) -> None:
    """`data` into `target` through `.<name>.<token>.tmp` beside it and one rename (mode 0o666 less the umask, as
    cmsdl.io's atomic writes); the temporary file is removed if anything fails."""
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{token}.tmp")
    fd = os.open(tmp, OPEN_FLAGS, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ImageWriter:
    """Encodes batches of images to PNG and writes each to its path, in `threads` threads (0: in the caller).

    At most two slices per thread are queued (bounded memory); `close()` waits for all and raises the first error.
    """

    def __init__(self, out: str | Path, compress_level: int, threads: int) -> None:
        self.out = str(out)
        self.compress_level = compress_level
        self.threads = max(0, int(threads))
        self.token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hits2png-write") if self.threads else None
        self._pending: list[Future] = []
        self._folders: set[str] = set()

    def submit(self, images: np.ndarray, paths: Sequence[str]) -> None:
        """Encode and write `images` (n, channels, height, width) to `paths` (relative to out)."""
        targets = [os.path.join(self.out, p) for p in paths]
        for folder in {os.path.dirname(t) for t in targets} - self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        if self._pool is None:
            self._write(images, targets)
            return
        self._drain(2 * self.threads)
        step = -(-len(targets) // self.threads)
        for start in range(0, len(targets), step):
            self._pending.append(self._pool.submit(self._write, images[start:start + step], targets[start:start + step]))

    def _write(self, images: np.ndarray, targets: Sequence[str]) -> None:
        for data, target in zip(encode_pngs(images, self.compress_level), targets):
            write_file_atomic(target, data, self.token)

    def _drain(self, keep: int) -> None:
        """Wait until at most `keep` slices are pending; raise the first error of a finished one."""
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def flush(self) -> None:
        """Wait until every image submitted so far is written; raise the first error."""
        self._drain(0)

    def close(self) -> None:
        """Wait for every pending slice (all of them, even after an error), then raise the first error."""
        if self._pool is None:
            return
        wait(self._pending)
        try:
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif self._pool is not None:  # the block's own error is the one to report
            self._pool.shutdown(wait=True)
