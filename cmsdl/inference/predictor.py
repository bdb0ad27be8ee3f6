"""Predictor: run an exported cmsdl model with onnxruntime, from raw inputs, using only the model's metadata.

Imports numpy, onnxruntime and cmsdl's torch-free helpers only: no torch, lightning or hydra, so it can be
embedded in production code and in the REST service.

    predictor = Predictor("model.onnx", threads=1)
    result = predictor.predict_records(workflows)        # tabular: raw records (e.g. workflow JSON)
    result = predictor.predict_rows([{"50660|good": 3.0, ...}])   # tabular: raw feature values by name
    result = predictor.predict_images(["event.png"])     # image models: PNG files or bytes
    result = predictor.predict_hits([{"x": [...], "y": [...], "z": [...]}])   # image models: hits in cm
    result.probabilities, result.labels
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cmsdl.inference.metadata import ModelContract

# Source kind (preprocessing["source"]["kind"]) → "module:function(state, records) -> raw feature rows".
RECORD_FEATURES: dict[str, str] = {
    "workflow_actions": "cmsdl.data.workflow_features:features_from_records",
    "transfers": "cmsdl.data.transfer_features:features_from_records",
}


class InputError(ValueError):
    """The input does not fit the model's contract (shape, dtype, fields); the message says what was expected."""


@dataclass
class Prediction:
    """Model outputs for a batch: class probabilities and labels, or regression values."""

    outputs: np.ndarray
    class_names: list[str]
    task: str

    @property
    def probabilities(self) -> np.ndarray:
        return self.outputs

    @property
    def labels(self) -> list[str]:
        if self.task != "classification":
            return []
        return [self.class_names[i] for i in self.outputs.argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        if self.task == "classification":
            return {"labels": self.labels, "probabilities": self.outputs.round(7).tolist(),
                    "class_names": self.class_names}
        return {"predictions": self.outputs.round(7).tolist(), "targets": self.class_names}


def _providers(requested: Sequence[str] | None) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"providers: {', '.join(missing)} not available (available: {', '.join(available)})")
        return list(requested)
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Predictor:
    """An exported cmsdl model loaded in onnxruntime, with its contract (ModelContract) read from the file."""

    def __init__(self, model: str | Path | bytes, threads: int | None = None,
                 providers: Sequence[str] | None = None, label: str | None = None) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        where = label or ("model bytes" if isinstance(model, bytes) else str(model))
        try:
            self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                                providers=_providers(providers))
        except Exception as err:
            reason = str(err).splitlines()[0].rsplit(" : ", 1)[-1].replace(str(model) if not isinstance(model, bytes) else "", where)
            raise ValueError(f"{where}: not a loadable ONNX model ({reason})") from None
        self.contract = ModelContract.from_metadata(self.session.get_modelmeta().custom_metadata_map, where)
        self.input_name = self.session.get_inputs()[0].name
        self.preprocessing = self.contract.preprocessing

    @property
    def kind(self) -> str:
        return self.preprocessing.get("kind", "tabular")

    def run(self, inputs: np.ndarray) -> Prediction:
        """Run on model-ready input (already preprocessed), checking its shape and dtype first."""
        self._check_input(inputs)
        outputs = self.session.run(None, {self.input_name: inputs})[0]
        return Prediction(outputs, self.contract.class_names, self.contract.task)

    def _check_input(self, inputs: Any) -> None:
        spec = self.contract.input
        if not isinstance(inputs, np.ndarray):
            raise InputError(f"input '{spec.name}': expected a numpy array, got {type(inputs).__name__}")
        if inputs.dtype != np.dtype(spec.dtype):
            raise InputError(f"input '{spec.name}': dtype {inputs.dtype}, expected {spec.dtype}")
        expected = spec.shape[1:]
        if inputs.ndim != len(spec.shape) or list(inputs.shape[1:]) != list(expected):
            raise InputError(f"input '{spec.name}': shape {list(inputs.shape)}, expected [batch, "
                             f"{', '.join(map(str, expected))}]")
        if len(inputs) == 0:
            raise InputError(f"input '{spec.name}': empty batch")
        if inputs.dtype.kind == "f" and not np.isfinite(inputs).all():
            raise InputError(f"input '{spec.name}': contains NaN or infinite values")

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Tabular: (raw - mean) / std with the training split's statistics, as float32."""
        mean = np.asarray(self.preprocessing["mean"], dtype=np.float32)
        std = np.asarray(self.preprocessing["std"], dtype=np.float32)
        return ((np.asarray(raw, dtype=np.float32) - mean) / std).astype(np.float32)

    def predict_rows(self, rows: Sequence[Mapping[str, float] | Sequence[float]] | np.ndarray) -> Prediction:
        """Tabular: raw feature values, as dicts by feature name (missing names are 0) or lists in order."""
        self.require_kind("tabular")
        names = self.preprocessing["feature_names"]
        if isinstance(rows, np.ndarray):
            return self.run(self.scale(rows))
        if rows and isinstance(rows[0], Mapping):
            index = {name: i for i, name in enumerate(names)}
            table = np.zeros((len(rows), len(names)), dtype=np.float32)
            for r, row in enumerate(rows):
                unknown = [k for k in row if k not in index]
                if unknown:
                    raise InputError(f"row {r}: unknown feature(s) {', '.join(map(repr, unknown[:5]))}; "
                                     f"the model knows {len(names)} features, e.g. {', '.join(names[:4])}")
                for key, value in row.items():
                    table[r, index[key]] = value
            return self.run(self.scale(table))
        try:
            table = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("rows: expected numbers, or objects mapping feature names to numbers") from None
        return self.run(self.scale(table))

    def predict_records(self, records: Sequence[dict[str, Any]]) -> Prediction:
        """Tabular: raw records in the training data's format (e.g. workflow JSON objects)."""
        self.require_kind("tabular")
        state = self.preprocessing.get("source", {})
        target = RECORD_FEATURES.get(state.get("kind", ""))
        if target is None:
            raise InputError(f"records: this model's source kind {state.get('kind')!r} has no record reader; "
                             "send feature rows instead")
        module, function = target.split(":")
        try:
            raw = getattr(importlib.import_module(module), function)(state, records)
        except ValueError as err:
            raise InputError(f"records: {err}") from None
        return self.run(self.scale(raw))

    def predict_images(self, images: Sequence[str | Path | bytes]) -> Prediction:
        """Image models: PNG files (paths) or PNG bytes, decoded and scaled as in training."""
        self.require_kind("image")
        from cmsdl.inference.images import images_to_input

        spec = self.contract.input
        return self.run(images_to_input(images, self.preprocessing, spec.shape, spec.dtype))

    def predict_hits(self, events: Sequence[Mapping[str, Sequence[float]]]) -> Prediction:
        """Image models: events of tracker hits ({"x": [...], "y": [...], "z": [...]} in cm), rendered with the
        model's hits2png settings."""
        self.require_kind("image")
        from cmsdl.inference.images import hits_to_input

        spec = self.contract.input
        return self.run(hits_to_input(events, self.preprocessing, spec.shape, spec.dtype))

    def require_kind(self, kind: str) -> None:
        if self.kind != kind:
            raise InputError(f"this is a {self.kind} model; {kind} inputs do not apply")


def load_npy(body: bytes) -> np.ndarray:
    """A .npy payload as an array (no pickles); InputError if it is not one."""
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"body: not a .npy array ({err})") from None
