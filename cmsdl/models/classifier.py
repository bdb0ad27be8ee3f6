"""Classifier: the LightningModule that trains any cmsdl network (MLP, ResNet) on labelled batches.

With two classes and ``binary_head`` the network has one output (the logit of the second class) and the loss
is binary cross-entropy, as in the seed's workflow-action DNN; otherwise softmax cross-entropy.
Metrics: loss, accuracy, ROC AUC (one-vs-rest for several classes), per split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, AUROC

from cmsdl.models.base import TrainedNetwork


Batch = tuple[torch.Tensor, ...]


def unpack(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(features, labels, event weights or None) from a batch of two or three tensors."""
    return batch[0], batch[1], batch[2] if len(batch) > 2 else None


def output_size(class_names: Sequence[str], binary_head: bool) -> int:
    """Number of network outputs: 1 for a binary head, else one per class."""
    return 1 if binary_head and len(class_names) == 2 else len(class_names)


class Classifier(TrainedNetwork):
    """Trains `net` with the optimiser (and optional scheduler) factories given by the config."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        scheduler: Callable[..., Any] | None = None,
        binary_head: bool = True,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__(net, optimizer, class_names, scheduler, monitor)
        self.binary = output_size(class_names, binary_head) == 1
        # validate_args=False: torchmetrics' value checks read the device each batch; labels are valid by construction
        task: dict[str, Any] = {"task": "binary", "validate_args": False}
        if not self.binary:
            task |= {"task": "multiclass", "num_classes": len(class_names)}
        self.val_metrics = MetricCollection({"acc": Accuracy(**task), "auroc": AUROC(**task)}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network outputs (logits)."""
        return self.net(x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities, shape (batch, n_classes), from logits."""
        if self.binary:
            p = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy, or with event weights their weighted mean (sum of w * loss / sum of w)."""
        if self.binary:
            losses = F.binary_cross_entropy_with_logits(logits.reshape(-1), y.float(), reduction="none")
        else:
            losses = F.cross_entropy(logits, y, reduction="none")
        if weight is None:
            return losses.mean()
        return (losses * weight).sum() / weight.sum().clamp_min(1e-12)

    def _metric_input(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.reshape(-1)) if self.binary else torch.softmax(logits, dim=1)

    def _step(self, batch: Batch, metrics: MetricCollection, stage: str) -> torch.Tensor:
        x, y, weight = unpack(batch)
        logits = self(x)
        loss = self._loss(logits, y, weight)
        metrics.update(self._metric_input(logits.detach()), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=len(y))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Loss and accuracy are summed on the device and logged once per epoch: self.log or a torchmetrics
        update per step costs a good part of a small network's whole step (scripts/bench_train_overhead.py)."""
        x, y, weight = unpack(batch)
        logits = self(x)
        loss = self._loss(logits, y, weight)
        with torch.no_grad():
            self._train_sums += torch.stack([loss * len(y), (self._predicted(logits) == y).sum()])
        self._train_count += len(y)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(2, device=self.device)
        self._train_count = 0

    def on_train_epoch_end(self) -> None:
        loss, acc = (self._train_sums / max(self._train_count, 1)).unbind()
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/acc", acc, sync_dist=True)

    def _predicted(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.reshape(-1) > 0).long() if self.binary else logits.argmax(dim=1)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y, w = unpack(batch)
        out = {"probs": self.probabilities(self(x)), "labels": y}
        return out if w is None else {**out, "weights": w}
