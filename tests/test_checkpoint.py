"""Checkpoints are loaded without running code, damaged ones are one error line, and a run directory names its best
checkpoint: for `cmsdl eval`, `cmsdl export` and `cmsdl train ... resume=true`, run as the README writes them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmsdl.callbacks import split_samples
from cmsdl.checkpoint import CheckpointError, best_in_run, load_checkpoint, parity_inputs
from cmsdl.cli import main
from conftest import train_args


class CreatesFile:
    """Unpickling this calls open(path, "w"): the file appears iff a loader ran code from the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return open, (str(self.path), "w")


def crafted(path: Path, marker: Path) -> Path:
    """A checkpoint (a real torch.save zip archive) whose cmsdl entry creates `marker` when unpickled."""
    torch.save({"state_dict": {}, "cmsdl": CreatesFile(marker)}, path)
    return path


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zeroed(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def test_the_crafted_checkpoint_would_run_code_under_an_unsafe_load(tmp_path: Path) -> None:
    """Guards the tests below: the exploit works with weights_only=False, so its refusal is meaningful."""
    marker = tmp_path / "pwned"
    torch.load(crafted(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_a_crafted_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=r"evil.ckpt was refused: loading it would call .*open"):
        load_checkpoint(crafted(tmp_path / "evil.ckpt", marker))
    assert not marker.exists()


def test_numpy_values_and_paths_in_a_checkpoint_are_allowed(tmp_path: Path) -> None:
    state = {"mean": np.arange(3, dtype=np.float32), "scale": np.float64(0.5), "dir": Path("/data")}
    torch.save({"state_dict": {"w": torch.ones(2)}, "cmsdl": {"preprocessing": state}}, tmp_path / "np.ckpt")
    loaded = load_checkpoint(tmp_path / "np.ckpt")["cmsdl"]["preprocessing"]
    np.testing.assert_array_equal(loaded["mean"], state["mean"])
    assert loaded["scale"] == 0.5 and loaded["dir"] == Path("/data")


def test_a_corrupted_entry_fails_its_crc_check(trained_checkpoint: Path, tmp_path: Path) -> None:
    """Bytes zeroed inside a tensor keep the archive readable: without the CRC check the weights are silently wrong."""
    data = bytearray(trained_checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    (tmp_path / "bad.ckpt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bad.ckpt is damaged: its entry .* fails its CRC check"):
        load_checkpoint(tmp_path / "bad.ckpt")


def cmsdl(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`cmsdl <args>` through the command's own entry point in this process: exit status, stdout and stderr."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(result: tuple[int, str, str], *expected: str) -> None:
    status, _, stderr = result
    assert status == 2 and "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    for text in expected:
        assert text in errors[0], errors[0]


BAD = {
    "crafted": ("was refused: loading it would call", lambda path, marker: crafted(path, marker)),
    "truncated": ("is damaged or not a PyTorch checkpoint", lambda path, marker: truncated(path)),
    "zeroed": ("is damaged or not a PyTorch checkpoint", lambda path, marker: zeroed(path)),
}


@pytest.mark.parametrize("damage", list(BAD))
def test_eval_and_export_refuse_a_bad_checkpoint_in_one_line(damage: str, trained_checkpoint: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    expected, spoil = BAD[damage]
    ckpt, marker = tmp_path / "model.ckpt", tmp_path / "pwned"
    shutil.copy(trained_checkpoint, ckpt)
    spoil(ckpt, marker)
    one_error_line(cmsdl(capsys, "eval", f"ckpt={ckpt}", f"paths.log_dir={tmp_path / 'logs'}"), f"ckpt: {ckpt}",
                   expected)
    out = tmp_path / "model.onnx"
    one_error_line(cmsdl(capsys, "export", f"ckpt={ckpt}", f"out={out}"), f"ckpt: {ckpt}", expected)
    assert not marker.exists() and not out.exists() and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("damage", list(BAD))
def test_resume_refuses_a_bad_last_checkpoint_in_one_line(damage: str, trained_checkpoint: Path, workflows_file: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An interrupted run (no metrics.json yet) whose last.ckpt is bad: `resume=true` says which file and why."""
    expected, spoil = BAD[damage]
    run_dir = tmp_path / "logs" / "train" / "runs" / "r"
    shutil.copytree(trained_checkpoint.parent.parent, run_dir)
    (run_dir / "metrics.json").unlink()
    last, marker = run_dir / "checkpoints" / "last.ckpt", tmp_path / "pwned"
    spoil(last, marker)
    args = train_args(workflows_file, tmp_path / "logs", "trainer.max_epochs=4", "run_name=r", "resume=true")
    one_error_line(cmsdl(capsys, *args), f"ckpt: {last}", expected)
    assert not marker.exists()


def test_resume_from_an_explicit_crafted_checkpoint_is_refused(workflows_file: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / "evil.ckpt", marker)
    one_error_line(cmsdl(capsys, *train_args(workflows_file, tmp_path / "logs", f"resume={evil}")),
                   f"ckpt: {evil} was refused")
    assert not marker.exists()


def test_a_run_directory_stands_for_its_best_checkpoint(trained_checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """`ckpt=<run directory>` (what `cmsdl train` leaves): eval and export take its best checkpoint and say so."""
    run_dir = trained_checkpoint.parent.parent
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    status, stdout, _ = cmsdl(capsys, "eval", f"ckpt={run_dir}", f"paths.log_dir={tmp_path / 'logs'}", "run_name=e")
    assert status == 0
    assert f"ckpt: {run_dir} is a run directory: using its best checkpoint (metrics.json) {best}" in stdout
    assert json.loads((tmp_path / "logs" / "eval" / "runs" / "e" / "metrics.json").read_text())["n"] > 0
    out = tmp_path / "m.onnx"
    status, stdout, _ = cmsdl(capsys, "export", f"ckpt={run_dir}", f"out={out}")
    assert status == 0 and f"using its best checkpoint (metrics.json) {best}" in stdout
    report = json.loads((tmp_path / "m.export.json").read_text())
    assert report["contract"]["cmsdl.source"]["checkpoint"] == best and out.is_file()


def make_run(run_dir: Path, best: str | None, files: tuple[str, ...]) -> Path:
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in files:
        (run_dir / "checkpoints" / name).write_bytes(b"")
    if best is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": best}))
    return run_dir


def test_which_checkpoint_a_run_directory_gives(tmp_path: Path) -> None:
    ran = make_run(tmp_path / "ran", str(tmp_path / "ran" / "checkpoints" / "epoch_003.ckpt"),
                   ("epoch_003.ckpt", "last.ckpt"))
    assert best_in_run(ran) == (ran / "checkpoints" / "epoch_003.ckpt", "its best checkpoint (metrics.json)")
    moved = make_run(tmp_path / "moved", "/elsewhere/checkpoints/epoch_007.ckpt", ("epoch_007.ckpt", "last.ckpt"))
    assert best_in_run(moved)[0] == moved / "checkpoints" / "epoch_007.ckpt", "a copied run directory still works"
    killed = make_run(tmp_path / "killed", None, ("last.ckpt",))
    assert best_in_run(killed) == (killed / "checkpoints" / "last.ckpt", "its last checkpoint")
    with pytest.raises(CheckpointError, match=r"ckpt: .*empty is a directory but not a run of `cmsdl train`"):
        best_in_run(make_run(tmp_path / "empty", None, ()))


class Splits:
    """A datamodule's split_loader over in-memory batches (image-sized uint8 or float64 features)."""

    def __init__(self, **splits: list[torch.Tensor]) -> None:
        self.splits = splits

    def split_loader(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x, torch.zeros(len(x))) for x in self.splits.get(name, [])]


def test_parity_samples_are_a_compact_capped_copy_of_the_first_split_with_rows(tmp_path: Path) -> None:
    """A view of a 256-image batch would save all 256 images: the stored tensor owns only its own rows."""
    images = [torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    samples = split_samples(Splits(test=images, val=[images[1]]), 64, 4 << 20)
    assert samples.dtype == torch.uint8 and samples.shape == (64, 3, 64, 64)
    assert torch.equal(samples, images[0][:64]) and samples.untyped_storage().nbytes() == samples.nbytes
    torch.save({"parity_inputs": samples}, tmp_path / "s.pt")
    assert (tmp_path / "s.pt").stat().st_size < samples.nbytes + 10_000
    assert len(split_samples(Splits(test=images), 64, 10 * 3 * 64 * 64)) == 10, "capped by bytes"
    assert len(split_samples(Splits(test=images), 64, 1)) == 2, "never fewer than 2 (tracing takes a batch of 2)"
    features = [torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64)]
    from_val = split_samples(Splits(test=[], val=features), 8, 4 << 20)
    assert from_val.dtype == torch.float32 and torch.equal(from_val, torch.cat(features)[:8].float())
    assert split_samples(Splits(), 8) is None


@pytest.mark.parametrize("stored, found", [
    ([[1.0, 2.0]], "list"),
    (torch.zeros(3, dtype=torch.int64), "a torch.int64 tensor of shape [3]"),
    (torch.zeros(0, 4), "a torch.float32 tensor of shape [0, 4]"),
])
def test_malformed_parity_samples_are_one_error_line(stored: object, found: str, tmp_path: Path) -> None:
    torch.save({"state_dict": {}, "cmsdl": {"parity_inputs": stored}}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=rf"m.ckpt: 'cmsdl.parity_inputs' is {re.escape(found)}, expected a "
                                              r"uint8 or float32 tensor"):
        parity_inputs(load_checkpoint(tmp_path / "m.ckpt"), tmp_path / "m.ckpt")
    torch.save({"state_dict": {}, "cmsdl": {}}, tmp_path / "old.ckpt")
    assert parity_inputs(load_checkpoint(tmp_path / "old.ckpt"), tmp_path / "old.ckpt") is None
