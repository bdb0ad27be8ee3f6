"""CheckpointOnSigterm in one process: SIGTERM mid-epoch saves last.ckpt and stops; fitting again from it
reaches the step count of a run that was never stopped (tests/test_ddp_k8s.py does the same under DDP)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.utilities.exceptions import SIGTERMException

from cmsdl.callbacks import CheckpointOnSigterm


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM after a given training step, as the kubelet (through torchrun) would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def trainer(tmp_path: Path, *callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=3, limit_train_batches=8, limit_val_batches=2,
                      accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


def test_sigterm_saves_the_checkpoint_and_the_next_fit_resumes_from_it(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SIGTERMException):
        trainer(tmp_path, SigtermAt(11), CheckpointOnSigterm(last)).fit(BoringModel())
    assert signal.getsignal(signal.SIGTERM) == previous, "handlers are restored after fit"
    saved = torch.load(last, weights_only=False)
    assert (saved["epoch"], saved["global_step"]) == (1, 11), "stopped in the middle of the second epoch"
    resumed = trainer(tmp_path, CheckpointOnSigterm(last))
    resumed.fit(BoringModel(), ckpt_path=str(last))
    assert resumed.global_step == 24 and resumed.current_epoch == 3
