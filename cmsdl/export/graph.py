"""The graph that `cmsdl export` writes and how it is checked: InferenceGraph (the fitted standardisation, the
network and its output activation) against PyTorch's network on inputs preprocessed by cmsdl's Python code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from cmsdl.callbacks import PARITY_SAMPLES
from cmsdl.errors import CmsdlError
from cmsdl.inference.arrays import standardize


class ParityError(CmsdlError):
    """onnxruntime and PyTorch disagree past the tolerance."""


class InferenceGraph(nn.Module):
    """The network with its output activation, after the standardisation (x - mean) / std when `scaling` gives
    (mean, std): what production code runs."""

    def __init__(self, model: nn.Module, half: bool = False,
                 scaling: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.model = model.half() if half else model
        self.half = half
        self.scaled = scaling is not None
        if scaling is not None:
            self.register_buffer("mean", torch.as_tensor(np.asarray(scaling[0], np.float32)))
            self.register_buffer("std", torch.as_tensor(np.asarray(scaling[1], np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scaled:
            x = (x - self.mean) / self.std
        out = self.model(x.half() if self.half and x.is_floating_point() else x)
        probabilities = getattr(self.model, "probabilities", None)
        out = probabilities(out) if callable(probabilities) else out
        return (out.unsqueeze(1) if out.ndim == 1 else out).float()


@dataclass
class Parity:
    """Largest absolute difference between onnxruntime and PyTorch outputs, per batch size."""

    max_abs_diff: dict[int, float]

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def graph_scaling(preprocessing: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The (mean, std) the exported graph applies to its raw input: a tabular model's standardisation; None for
    image models, whose networks scale their uint8 pixels themselves."""
    if preprocessing.get("kind", "tabular") != "tabular":
        return None
    return np.asarray(preprocessing["mean"], np.float32), np.asarray(preprocessing["std"], np.float32)


def raw_inputs(samples: torch.Tensor, preprocessing: dict[str, Any]) -> np.ndarray:
    """The parity samples (stored as the network saw them in training) as the raw inputs the graph takes: tabular
    rows un-standardised (x * std + mean), images as they are."""
    scaling = graph_scaling(preprocessing)
    x = samples.numpy()
    return x if scaling is None else (x * scaling[1] + scaling[0]).astype(np.float32)


def pytorch_reference(model: nn.Module, preprocessing: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Raw inputs → PyTorch's outputs after cmsdl's Python preprocessing (cmsdl.inference.arrays.standardize, as
    applied outside the graph before): what the self-contained graph must reproduce."""
    network = InferenceGraph(model).eval()
    scaling = graph_scaling(preprocessing)

    def reference(raw: np.ndarray) -> np.ndarray:
        x = raw if scaling is None else standardize(raw, scaling[0], scaling[1])
        with torch.no_grad():
            return network(torch.from_numpy(x)).numpy()

    return reference


def onnx_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def check_parity(model_bytes: bytes, reference: Callable[[np.ndarray], np.ndarray], raw: np.ndarray,
                 batch_sizes: tuple[int, ...] = (1, 7, PARITY_SAMPLES)) -> Parity:
    """Max |onnxruntime(raw) - reference(raw)| over real samples, at each batch size (1, a prime, a large one)."""
    diffs = {}
    for size in batch_sizes:
        batch = raw[: min(size, len(raw))]
        expected = reference(batch)
        got = onnx_outputs(model_bytes, batch)
        if not np.isfinite(got).all():
            raise ParityError(f"export: onnxruntime output has NaN or inf at batch size {len(batch)}")
        diffs[len(batch)] = float(np.abs(got - expected).max())
    return Parity(diffs)
