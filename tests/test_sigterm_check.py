"""CheckpointOnSigterm's cost: one process reads its own flag after every batch; under DDP the ranks agree (a
collective) only every `every_n_batches` batches and at each epoch's end, and still stop on the first check after
a signal. A fake trainer counts the collectives (the real DDP run: tests/test_ddp_k8s.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from cmsdl.callbacks import CheckpointOnSigterm
from cmsdl.config import check_values
from cmsdl.errors import ConfigError


class CountingStrategy:
    """Stands in for a DDP strategy: counts reduce_boolean_decision calls (the all-reduce each would be)."""

    def __init__(self) -> None:
        self.collectives = 0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002  Lightning's name
        self.collectives += 1
        return decision


def fake_trainer(world_size: int) -> SimpleNamespace:
    saved: list[Path] = []
    return SimpleNamespace(world_size=world_size, strategy=CountingStrategy(), saved=saved,
                           save_checkpoint=saved.append, is_global_zero=True, current_epoch=0, global_step=0)


def run_batches(callback: CheckpointOnSigterm, trainer: SimpleNamespace, batches: int) -> None:
    for batch_idx in range(batches):
        callback.on_train_batch_end(trainer, None, None, None, batch_idx)
    callback.on_train_epoch_end(trainer, None)


def test_ddp_ranks_agree_every_n_batches_and_at_the_epoch_end(tmp_path: Path) -> None:
    trainer = fake_trainer(world_size=2)
    run_batches(CheckpointOnSigterm(tmp_path / "last.ckpt", every_n_batches=4), trainer, 10)
    assert trainer.strategy.collectives == 3, "batches 4 and 8, then the epoch's end: not one per batch"
    assert trainer.saved == []


def test_ddp_signal_stops_at_the_next_check(tmp_path: Path) -> None:
    trainer = fake_trainer(world_size=2)
    callback = CheckpointOnSigterm(tmp_path / "last.ckpt", every_n_batches=4)
    callback.on_train_batch_end(trainer, None, None, None, 0)
    callback._note(15, None)
    for batch_idx in (1, 2):
        callback.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert trainer.saved == []
    with pytest.raises(SIGTERMException):
        callback.on_train_batch_end(trainer, None, None, None, 3)
    assert trainer.saved == [tmp_path / "last.ckpt"]


def test_one_process_checks_its_flag_after_every_batch(tmp_path: Path) -> None:
    trainer = fake_trainer(world_size=1)
    callback = CheckpointOnSigterm(tmp_path / "last.ckpt", every_n_batches=4)
    callback._note(15, None)
    with pytest.raises(SIGTERMException):
        callback.on_train_batch_end(trainer, None, None, None, 0)


def test_check_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="sigterm_check_every_n_batches: expected an integer >= 1, got 0"):
        check_values(OmegaConf.create({"sigterm_check_every_n_batches": 0}))
