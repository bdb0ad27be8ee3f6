"""TrainedNetwork: what every cmsdl LightningModule shares: a network, optimiser and scheduler factories, the
validation/test steps and the per-epoch training sums (subclasses define `_step` and the epoch hooks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection


class TrainedNetwork(pl.LightningModule):
    """Holds `net`, the class (or target) names, and builds the optimiser/scheduler that the config gives."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], class_names: Sequence[str],
                 scheduler: Callable[..., Any] | None = None, monitor: str = "val/loss") -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        self.monitor = monitor

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def on_train_start(self) -> None:
        self.on_train_epoch_start()  # a fit resumed mid-epoch skips on_train_epoch_start

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
