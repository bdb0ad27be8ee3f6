"""Callbacks that cmsdl adds to every training run."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

import cmsdl

CHECKPOINT_KEY = "cmsdl"


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
