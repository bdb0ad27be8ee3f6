"""Callbacks that cmsdl adds to every training run."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
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
    ranks are interrupted at different points. This one only notes the signal. One process checks its flag after
    every batch; under DDP the ranks agree (one all-reduce, and on GPUs a device synchronisation) whether any got
    it every `every_n_batches` batches and at each epoch's end, the same batches on every rank. Then rank 0 writes
    the checkpoint and every rank raises SIGTERMException, so that the same command with `resume=true` continues
    from where it stopped.
    """

    def __init__(self, path: str | Path, every_n_batches: int = 10) -> None:
        if every_n_batches < 1:
            raise ValueError(f"every_n_batches: expected a positive number of batches, got {every_n_batches}")
        self.path = Path(path)
        self.every_n_batches = every_n_batches
        self.requested = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():  # Lightning restores the handlers at teardown
            signal.signal(signal.SIGTERM, self._note)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size == 1 or (batch_idx + 1) % self.every_n_batches == 0:
            self._stop_if_any_rank_got_it(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            self._stop_if_any_rank_got_it(trainer)

    def _stop_if_any_rank_got_it(self, trainer: pl.Trainer) -> None:
        """Save the checkpoint and stop every rank if any rank noted SIGTERM (a collective under DDP)."""
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                log.warning("SIGTERM at epoch %d, step %d: saved %s; the same command with resume=true continues "
                            "from it", trainer.current_epoch, trainer.global_step, self.path)
            raise SIGTERMException()


class EpochLine(pl.Callback):
    """One log line per training epoch: `epoch 3/20  train/loss=0.6812  val/loss=0.6757 ...  (1.2 s)`, with the
    metrics named in `metrics` (all logged ones when empty).

    The line of an epoch is written when the next one starts (or training ends): the model logs its training
    metrics in its own on_train_epoch_end, which Lightning calls after the callbacks'.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = list(metrics or [])
        self.started = time.monotonic()
        self.ended: tuple[int, float] | None = None  # (epoch, seconds) of the epoch whose line is due

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_due_line(trainer)
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = (trainer.current_epoch, time.monotonic() - self.started)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_due_line(trainer)

    def _write_due_line(self, trainer: pl.Trainer) -> None:
        if self.ended is not None and trainer.is_global_zero:
            log.info("%s", epoch_line(self.ended[0], trainer.max_epochs, trainer.callback_metrics, self.metrics,
                                      self.ended[1]))
        self.ended = None


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict[str, Any], chosen: list[str],
               seconds: float) -> str:
    """`epoch <n>/<max>  key=value ...  (<s> s)`, 1-based; the chosen metrics in their order, else all by name."""
    names = [k for k in chosen if k in metrics] if chosen else sorted(k for k in metrics if k != "epoch")
    values = [f"{k}={float(metrics[k]):.4g}" for k in names if getattr(metrics[k], "numel", lambda: 1)() == 1]
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return "  ".join([f"epoch {epoch + 1}{total}", *values, f"({seconds:.1f} s)"])


def estimated_batches(datamodule: Any, split: str, world_size: int = 1) -> int | None:
    """Batches per rank of a streamed split, from the rows the data counted while scanning (a ROOT table's
    rows_per_unit); None where the data does not know its rows."""
    from cmsdl.data.base import SPLITS

    rows = getattr(datamodule, "rows_per_unit", None)
    batch_size = getattr(datamodule, "batch_size" if split == "train" else "eval_batch_size", None)
    if rows is None or not batch_size or split not in SPLITS:
        return None
    total = int(rows[:, SPLITS.index(split)].sum())
    return math.ceil(total / world_size / batch_size) if total > 0 else None


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, with a total for streamed data (a ROOT table) where the data counted its rows."""

    def _estimate(self, total: int | float, split: str) -> int | float:
        if math.isfinite(total) or self.trainer.datamodule is None:
            return total
        return estimated_batches(self.trainer.datamodule, split, self.trainer.world_size) or total

    @property
    def total_train_batches(self) -> int | float:
        return self._estimate(super().total_train_batches, "train")

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        return self._estimate(super().total_val_batches_current_dataloader, "val")

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        return self._estimate(super().total_test_batches_current_dataloader, "test")
