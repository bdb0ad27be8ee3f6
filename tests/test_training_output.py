"""What a training prints: one line per epoch, the network and third-party chatter in the log file only, a progress
bar total for streamed data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cmsdl.callbacks import epoch_line, estimated_batches
from cmsdl.console import TrainingConsoleFilter


def record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.mark.parametrize("name, message, on_console", [
    ("cmsdl.callbacks", "epoch 1/3  val/loss=0.69  (0.5 s)", True),
    ("cmsdl.train", "network:\nMLP(...)", False),
    ("pytorch_lightning.callbacks.model_summary", "  | Name | Type | Params", False),
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip: For seamless cloud logging, try installing litlogger", False),
    ("pytorch_lightning.utilities.rank_zero", "GPU available: False, used: False", False),
    ("pytorch_lightning.utilities.rank_zero", "Restored all states from the checkpoint at last.ckpt", True),
    ("py.warnings", "_pytree.py:21: `isinstance(treespec, LeafSpec)` is deprecated", False),
    ("cmsdl.sweeps", "sweep point 1 failed: deprecated option", True),
])
def test_console_shows_cmsdl_and_lightning_essentials_only(name: str, message: str, on_console: bool) -> None:
    level = logging.ERROR if name == "cmsdl.sweeps" else logging.INFO
    assert TrainingConsoleFilter().filter(record(name, message, level)) is on_console


def test_epoch_line_has_the_chosen_metrics_in_order() -> None:
    metrics = {"val/loss": torch.tensor(0.6925), "train/loss": torch.tensor(0.69687), "val/auroc": 0.7,
               "epoch": 0, "per_class": torch.zeros(3)}
    assert epoch_line(0, 3, metrics, ["train/loss", "val/loss", "val/r2"], 1.25) == \
        "epoch 1/3  train/loss=0.6969  val/loss=0.6925  (1.2 s)"
    assert epoch_line(4, -1, metrics, [], 0.5) == "epoch 5  train/loss=0.6969  val/auroc=0.7  val/loss=0.6925  (0.5 s)"


class CountedRows:
    """A streamed data module as the progress bar sees it: rows per unit and split counted by the scan."""
    batch_size, eval_batch_size = 100, 1000
    rows_per_unit = np.array([[250, 50, 50], [251, 0, 60]])


def test_progress_bar_total_of_streamed_data_comes_from_its_row_count() -> None:
    assert estimated_batches(CountedRows(), "train") == 6
    assert estimated_batches(CountedRows(), "train", world_size=2) == 3
    assert estimated_batches(CountedRows(), "val") == 1
    assert estimated_batches(object(), "train") is None
