"""The classifier's validation metrics: updated once per batch without reading the device (torchmetrics' value
checks would, each batch), with the values that checked metrics give."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torchmetrics.classification import AUROC, Accuracy

from cmsdl.models.classifier import Classifier


def classifier(class_names: list[str]) -> Classifier:
    out = 1 if len(class_names) == 2 else len(class_names)
    return Classifier(nn.Linear(4, out), functools.partial(torch.optim.Adam, lr=1e-3), class_names)


def test_metric_updates_skip_the_value_checks_and_match_checked_metrics() -> None:
    for names, task in ((["a", "b"], {"task": "binary"}), (["a", "b", "c"], {"task": "multiclass", "num_classes": 3})):
        model = classifier(names)
        assert [m.validate_args for m in model.val_metrics.values()] == [False, False]
        assert [m.validate_args for m in model.test_metrics.values()] == [False, False]
        checked = {"acc": Accuracy(**task), "auroc": AUROC(**task)}
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            x, y = torch.randn(32, 4, generator=generator), torch.randint(0, len(names), (32,), generator=generator)
            with torch.no_grad():
                scores = model._metric_input(model(x))
            model.val_metrics.update(scores, y)
            for metric in checked.values():
                metric.update(scores, y)
        computed = model.val_metrics.compute()
        for name, metric in checked.items():
            torch.testing.assert_close(computed[f"val/{name}"], metric.compute())
