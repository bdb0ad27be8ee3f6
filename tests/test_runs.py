"""Run directories: resume=true finds the earlier run of the same command; explicit checkpoints are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cmsdl.errors import ConfigError
from cmsdl.runs import LAST_CKPT, checkpoint_to_resume, find_resumable_run


def make_run(task_dir: Path, name: str, overrides: list[str], checkpoint: bool = True) -> Path:
    run_dir = task_dir / "runs" / name
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    if checkpoint:
        (run_dir / LAST_CKPT).parent.mkdir()
        (run_dir / LAST_CKPT).write_bytes(b"x")
    return run_dir


def test_newest_run_with_the_same_overrides_and_a_checkpoint_is_found(tmp_path: Path) -> None:
    make_run(tmp_path, "2026-01-01_10-00-00", ["experiment=workflow_actions"])
    make_run(tmp_path, "2026-01-02_10-00-00", ["experiment=workflow_actions", "resume=true"])
    make_run(tmp_path, "2026-01-03_10-00-00", ["experiment=workflow_actions", "model.optimizer.lr=0.1"])
    make_run(tmp_path, "2026-01-04_10-00-00", ["experiment=workflow_actions"], checkpoint=False)
    assert find_resumable_run(tmp_path, "RUN", ["experiment=workflow_actions"]) == "2026-01-02_10-00-00"
    assert find_resumable_run(tmp_path, "RUN", ["experiment=other"]) is None


def test_checkpoint_to_resume(tmp_path: Path) -> None:
    assert checkpoint_to_resume(False, tmp_path) is None
    assert checkpoint_to_resume(True, tmp_path) is None, "nothing to resume yet: start fresh"
    (tmp_path / LAST_CKPT).parent.mkdir()
    (tmp_path / LAST_CKPT).write_bytes(b"x")
    assert checkpoint_to_resume("true", tmp_path) == str(tmp_path / LAST_CKPT)
    with pytest.raises(ConfigError, match="already holds a run"):
        checkpoint_to_resume(False, tmp_path)
    with pytest.raises(ConfigError, match="missing.ckpt does not exist"):
        checkpoint_to_resume(str(tmp_path / "missing.ckpt"), tmp_path)


def test_ranks_of_one_torchrun_launch_agree_on_the_run_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from cmsdl.runs import process_start, run_name

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    first = run_name(str(tmp_path), False)
    time.sleep(1.1)
    assert run_name(str(tmp_path), False) == first, "ranks starting a second apart share the launcher's start time"
    assert first == process_start(os.getppid()).strftime("%Y-%m-%d_%H-%M-%S")


@pytest.mark.parametrize("content", [
    b"\xff\xfe not utf-8",
    b"- a\n- [unclosed",
    b"[" * 100_000,
    b"- ${oc.env:HOME}\n- x=${undefined.key}",
    b"a" * ((4 << 20) + 1),
])
def test_a_broken_or_crafted_saved_overrides_file_is_never_matched(tmp_path: Path, content: bytes) -> None:
    make_run(tmp_path, "good", ["experiment=workflow_actions"])
    bad = make_run(tmp_path, "z-bad", ["experiment=workflow_actions"])
    (bad / ".hydra" / "overrides.yaml").write_bytes(content)
    assert find_resumable_run(tmp_path, "RUN", ["experiment=workflow_actions"]) == "good"
