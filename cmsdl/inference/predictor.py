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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cmsdl.features.popularity.source import features_from_records as popularity_records
from cmsdl.features.root_table.read import features_from_records as root_table_records
from cmsdl.features.transfers.source import features_from_records as transfer_records
from cmsdl.features.workflows.source import features_from_records as workflow_records
from cmsdl.inference.arrays import InputError, feature_table, load_npy, standardize
from cmsdl.inference.metadata import ContractError, ModelContract

__all__ = ["InputError", "Prediction", "Predictor", "load_npy"]
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}
# Source kind (preprocessing["source"]["kind"]) → features_from_records(state, records) -> raw feature rows.
RECORD_FEATURES: dict[str, Callable[[dict[str, Any], Sequence[Any]], np.ndarray]] = {
    "workflow_actions": workflow_records,
    "transfers": transfer_records,
    "popularity": popularity_records,
    "root_table": root_table_records,
}


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
            reason = first_line(err).rsplit(" : ", 1)[-1]
            if not isinstance(model, bytes):
                reason = reason.replace(str(model), where)
            raise ContractError(f"{where}: not a loadable ONNX model ({reason})") from None
        self.contract = ModelContract.from_metadata(self.session.get_modelmeta().custom_metadata_map, where)
        check_graph(self.contract, self.session, where)
        self.input_name = self.contract.input.name
        self.preprocessing = self.contract.preprocessing
        if self.kind == "image" and "projections" in self.preprocessing.get("image", {}):
            from cmsdl.inference.images import hits_spec

            hits_spec(self.preprocessing, where)
        self._test_inference(where)

    @property
    def kind(self) -> str:
        return self.preprocessing.get("kind", "tabular")

    def run(self, inputs: np.ndarray) -> Prediction:
        """Run on the graph's input, checking its shape and dtype first: raw features (raw uint8 pixels) when the
        graph applies the preprocessing (``contract.preprocessing_in_graph``), else standardised features."""
        self._check_input(inputs)
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(inputs)})[0]
        broken = ~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
        if broken.any():
            items = ", ".join(map(str, np.flatnonzero(broken)[:10]))
            raise InputError(f"the model's output is NaN or infinite for batch item(s) {items}: their inputs are "
                             "outside the range the model can take")
        return Prediction(outputs, self.contract.class_names, self.contract.task)

    def _test_inference(self, where: str) -> None:
        """One run on a batch of 2 zero inputs: the graph runs and answers [2, classes] finite values."""
        spec = self.contract.input
        zeros = np.zeros([2, *spec.shape[1:]], dtype=spec.dtype)
        try:
            outputs = self.session.run(None, {self.input_name: zeros})[0]
        except Exception as err:  # onnxruntime raises its own exception types for graphs that cannot run
            raise ContractError(f"{where}: test inference on zeros failed ({first_line(err)})") from None
        expected = (2, len(self.contract.class_names))
        if outputs.shape != expected or not np.isfinite(outputs).all():
            raise ContractError(f"{where}: test inference on zeros gave shape {list(outputs.shape)} (expected "
                                f"{list(expected)}){'' if np.isfinite(outputs).all() else ' with NaN or inf'}")

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
        """Tabular raw features → the graph's float32 input. The one place where the predictor scales: only for
        files exported before the graph took raw features (no ``in_graph`` in their preprocessing), with
        (raw - mean) / std and the training split's statistics; a graph with the scaling inside gets raw values."""
        width = len(self.preprocessing["feature_names"])
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[1] != width:
            raise InputError(f"raw features of shape {list(raw.shape)}, expected [rows, {width}]")
        if self.contract.preprocessing_in_graph:
            return raw.astype(np.float32)
        return standardize(raw, self.preprocessing["mean"], self.preprocessing["std"])

    def predict_rows(self, rows: Sequence[Mapping[str, float] | Sequence[float]] | np.ndarray) -> Prediction:
        """Tabular: raw feature values, as dicts by feature name or lists in feature order. A dict must name every
        feature except those the contract gives a default (``preprocessing["defaults"]``)."""
        self.require_kind("tabular")
        if isinstance(rows, np.ndarray):
            return self.run(self.scale(rows))
        names = self.preprocessing["feature_names"]
        return self.run(self.scale(feature_table(rows, names, self.preprocessing.get("defaults", {}))))

    def predict_records(self, records: Sequence[dict[str, Any]]) -> Prediction:
        """Tabular: raw records in the training data's format (e.g. workflow JSON objects)."""
        self.require_kind("tabular")
        state = self.preprocessing.get("source", {})
        features_from_records = RECORD_FEATURES.get(state.get("kind", ""))
        if features_from_records is None:
            raise InputError(f"records: this model's source kind {state.get('kind')!r} has no record reader; "
                             "send feature rows instead")
        try:
            raw = features_from_records(state, records)
        except (ValueError, OverflowError, RecursionError) as err:
            message = first_line(err)
            raise InputError(message if message.startswith("records") else f"records: {message}") from None
        except (KeyError, TypeError, AttributeError, IndexError) as err:  # records shaped unlike the reader expects
            raise InputError(f"records: cannot be read as {state.get('kind')!r} records "
                             f"({type(err).__name__}: {first_line(err)})") from None
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


def first_line(err: BaseException) -> str:
    """The first line of an error message, at most 200 characters (onnxruntime's messages run long)."""
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def check_graph(contract: ModelContract, session: ort.InferenceSession, where: str) -> None:
    """The contract's inputs and outputs are the graph's: same names in order, dtypes and fixed sizes."""
    for role, specs, nodes in (("inputs", contract.inputs, session.get_inputs()),
                               ("outputs", contract.outputs, session.get_outputs())):
        if [spec.name for spec in specs] != [node.name for node in nodes][:len(specs)] or len(nodes) < len(specs):
            raise ContractError(f"{where}: cmsdl.{role} names {[spec.name for spec in specs]}, but the graph's "
                                f"{role} are {[node.name for node in nodes]}")
        for spec, node in zip(specs, nodes):
            dtype = ORT_DTYPES.get(node.type, node.type)
            sizes = [size if isinstance(size, int) else None for size in node.shape]
            fixed_mismatch = any(got is not None and got != want for want, got in zip(spec.shape[1:], sizes[1:]))
            if dtype != spec.dtype or len(sizes) != len(spec.shape) or fixed_mismatch:
                raise ContractError(f"{where}: cmsdl.{role} declares '{spec.name}' as {spec.dtype} {spec.shape}, "
                                    f"the graph has {dtype} {list(node.shape)}")
            if sizes[0] is not None:
                raise ContractError(f"{where}: the graph's '{spec.name}' has a fixed batch size {sizes[0]}; "
                                    "export it with a dynamic batch axis")
