"""Callbacks that cmsdl adds to every training run."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

import cmsdl

CHECKPOINT_KEY = "cmsdl"
log = logging.getLogger(__name__)


class RunContext(pl.Callback):
    """Stores the resolved run config and the data preprocessing in every checkpoint, for eval and export."""

    def __init__(self, config: dict[str, Any], preprocessing: dict[str, Any]) -> None:
        self.config = config
        self.preprocessing = preprocessing

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "version": cmsdl.__version__,
            "config": self.config,
            "preprocessing": self.preprocessing,
        }


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM (how Kubernetes stops a pod; torchrun passes it on) save `path`, the run's last.ckpt, and stop.

    Lightning's own SIGTERM handler runs a collective inside the signal handler, which deadlocks DDP when the
    ranks are interrupted at different points. This one only notes the signal; after every training batch all
    ranks agree (one all-reduce) whether any got it, then rank 0 writes the checkpoint and every rank raises
    SIGTERMException, so that the same command with `resume=true` continues from where it stopped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.requested = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():  # Lightning restores the handlers at teardown
            signal.signal(signal.SIGTERM, self._note)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                log.warning("SIGTERM at epoch %d, step %d: saved %s; the same command with resume=true continues "
                            "from it", trainer.current_epoch, trainer.global_step, self.path)
            raise SIGTERMException()
