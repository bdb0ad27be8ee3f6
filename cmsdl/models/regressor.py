"""Regressor: the LightningModule that trains any cmsdl network to predict one or more real-valued targets.

It follows Classifier's contract (``class_names`` holds the target names, ``net.out_features`` one output per
target) so that `cmsdl train` and the checkpoint format need nothing new. Loss: MSE, L1 or Huber.
Metrics per split: loss, MAE, RMSE and R², logged once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from cmsdl.models.base import TrainedNetwork

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


class Regressor(TrainedNetwork):
    """Trains `net` on (features, targets) batches with the optimiser (and optional scheduler) of the config."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        scheduler: Callable[..., Any] | None = None,
        loss: str = "mse",
        monitor: str = "val/loss",
        binary_head: bool = False,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"model.loss: got {loss!r}, expected one of {', '.join(LOSSES)}")
        super().__init__(net, optimizer, class_names, scheduler, monitor)
        self.loss_fn = LOSSES[loss]
        metrics = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()}
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted targets, shape (batch,) for one target, else (batch, n_targets)."""
        out = self.net(x)
        return out.reshape(-1) if len(self.class_names) == 1 else out

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str) -> torch.Tensor:
        x, y = batch
        predicted = self(x)
        loss = self.loss_fn(predicted, y)
        metrics.update(predicted.detach(), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=len(y))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The loss is summed on the device and logged once per epoch (as in Classifier)."""
        x, y = batch
        loss = self.loss_fn(self(x), y)
        with torch.no_grad():
            self._train_sum += loss * len(y)
        self._train_count += len(y)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sum = torch.zeros((), device=self.device)
        self._train_count = 0

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self._train_sum / max(self._train_count, 1), prog_bar=True, sync_dist=True)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"predictions": self(x), "targets": y}
