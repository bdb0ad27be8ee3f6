"""TrainedNetwork: what every cmsdl LightningModule shares, a network plus optimiser and scheduler factories."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn


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

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
