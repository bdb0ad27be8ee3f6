"""cmsdl.io.files: the one atomic-write helper (single files, several files renamed together, file modes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmsdl.io import atomic_path, atomic_write, staged_files, write_bytes_atomic, write_files_atomic


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_several_files_are_renamed_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"old a")
    with pytest.raises(TypeError):
        write_files_atomic({tmp_path / "a.onnx": b"new a", tmp_path / "sub" / "b.json": "not bytes"})  # type: ignore
    assert (tmp_path / "a.onnx").read_bytes() == b"old a", "a failed write touches no target"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.onnx"], "no temporary file is left"
    write_files_atomic({tmp_path / "a.onnx": b"new a", tmp_path / "sub" / "b.json": b"{}"})
    assert (tmp_path / "a.onnx").read_bytes() == b"new a" and (tmp_path / "sub" / "b.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.onnx", "b.json"]


def test_files_staged_but_not_committed_are_removed(tmp_path: Path) -> None:
    with staged_files() as staging:
        staging.write(tmp_path / "x.bin", b"x")
        staged = [p.name for p in tmp_path.iterdir()]
    assert staged[0].startswith(".x.bin.") and staged[0].endswith(".tmp")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_block_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic_path(target, ".root") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_files_get_the_umask_mode_unless_a_mode_is_given(tmp_path: Path, strict_umask: None) -> None:
    write_bytes_atomic(tmp_path / "private.bin", b"1")
    write_bytes_atomic(tmp_path / "shared.bin", b"1", file_mode=0o644)
    with atomic_write(tmp_path / "shared.txt", file_mode=0o644) as handle:
        handle.write("1")
    assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
