"""Callbacks that cmsdl adds to every training run."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

import cmsdl

CHECKPOINT_KEY = "cmsdl"
PARITY_SPLITS = ("test", "val")  # where the parity samples come from: the test split, else the validation split
PARITY_SAMPLES = 64  # the largest batch size of the export's parity check
PARITY_MAX_BYTES = 4 << 20  # fewer samples where 64 would be larger (3x64x64 uint8 images: 64 take 0.75 MiB)
log = logging.getLogger(__name__)


class RunContext(pl.Callback):
    """Stores the resolved run config, the data preprocessing and a few model-ready inputs (the parity samples, a
    plain tensor) in every checkpoint: eval needs the data, export does not."""

    def __init__(self, config: dict[str, Any], preprocessing: dict[str, Any], task: str = "classification") -> None:
        self.config = config
        self.preprocessing = preprocessing
        self.task = task
        self.parity_inputs: torch.Tensor | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "split_loader"):
            with torch.random.fork_rng(devices=[]):  # a loader draws a seed: training's random stream stays as it was
                self.parity_inputs = split_samples(datamodule, PARITY_SAMPLES, PARITY_MAX_BYTES)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "version": cmsdl.__version__,
            "config": self.config,
            "preprocessing": self.preprocessing,
            "task": self.task,
        }
        if self.parity_inputs is not None:
            checkpoint[CHECKPOINT_KEY]["parity_inputs"] = self.parity_inputs


def split_samples(datamodule: Any, n: int, max_bytes: int | None = None) -> torch.Tensor | None:
    """Up to n model inputs (fewer where they would pass max_bytes, but at least 2) from the first of PARITY_SPLITS
    that has rows, in the data's dtype: uint8 images (the networks scale them), float32 features otherwise.

    A compact copy, so that saving it writes these rows only, never the batch they were cut from; None without rows.
    """
    for split in PARITY_SPLITS:
        rows: list[torch.Tensor] = []
        for batch in datamodule.split_loader(split):
            rows.append(batch[0])
            if sum(len(r) for r in rows) >= n:
                break
        if rows:
            samples = torch.cat(rows)
            samples = samples if samples.dtype == torch.uint8 else samples.float()
            if max_bytes is not None:
                n = min(n, max(2, max_bytes // max(1, samples[0].nbytes)))
            return samples[:n].cpu().clone()
    return None


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
