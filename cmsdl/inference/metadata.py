"""The contract an exported model carries: ONNX metadata keys written by `cmsdl export`, read by the predictor.

Every value is a string (ONNX metadata_props); structured values are JSON. Production code in any language
reads them with its ONNX Runtime binding (C++: ``Ort::ModelMetadata::LookupCustomMetadataMapAllocated``;
Python: ``session.get_modelmeta().custom_metadata_map``). Imports no torch.

================================  =============================================================================
key                               value
================================  =============================================================================
``cmsdl.version``                 cmsdl version that exported the model
``cmsdl.task``                    ``classification`` or ``regression``
``cmsdl.class_names``             JSON list: output columns of ``probabilities`` (or regression targets)
``cmsdl.inputs``                  JSON list of ``{"name", "shape", "dtype"}``; ``shape[0]`` is ``"batch"``
``cmsdl.outputs``                 JSON list of ``{"name", "shape", "dtype"}``
``cmsdl.preprocessing``           JSON object: how raw inputs become the input tensor (see below)
``cmsdl.source``                  JSON object: checkpoint, run directory and experiment it was exported from
================================  =============================================================================

``cmsdl.preprocessing`` has ``"kind"``: ``"tabular"`` (``feature_names``, ``mean``, ``std``: the network sees
``(raw_features - mean) / std`` in ``feature_names`` order; ``source``: the fitted record → raw-feature builder,
with any ``log1p`` it applies; optional ``defaults``: ``{feature: value}`` for the features a row may leave out,
e.g. exit-code counts that are 0) or ``"image"`` (image size, channel names, value scaling).

``"in_graph": true`` (written since cmsdl put the numeric preprocessing into the graph) says that the graph itself
applies the numeric preprocessing documented here: a tabular model's input is the raw feature rows (the graph
computes ``(x - mean) / std``), an image model's input the raw uint8 pixels (the graph scales them). Absent or
false (files exported before): a tabular input must be standardised by its user. Building features from records
cannot live in a graph and stays the user's (``source``), e.g. cmsdl.inference.Predictor.predict_records.

``ModelContract.from_metadata`` checks every key (types, known dtypes, non-empty inputs and classes, the input width
against ``feature_names``, the output width against ``class_names``) and raises ContractError naming the key;
the predictor then checks the contract against the ONNX graph itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PREFIX = "cmsdl."
KEYS = ("version", "task", "class_names", "inputs", "outputs", "preprocessing", "source")
JSON_KEYS = ("class_names", "inputs", "outputs", "preprocessing", "source")
TASKS = ("classification", "regression")
KINDS = ("tabular", "image")
DTYPES = ("float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool")


class ContractError(ValueError):
    """A model file's cmsdl contract is missing, malformed, or disagrees with the model's graph."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[Any]
    dtype: str


@dataclass(frozen=True)
class ModelContract:
    """What an exported cmsdl model expects and returns."""

    version: str
    task: str
    class_names: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def preprocessing_in_graph(self) -> bool:
        """The graph applies the numeric preprocessing itself: it takes raw features (or raw pixels)."""
        return self.preprocessing.get("in_graph") is True

    def to_metadata(self) -> dict[str, str]:
        """The ONNX metadata_props entries for this contract."""
        plain = {
            "version": self.version,
            "task": self.task,
            "class_names": self.class_names,
            "inputs": [spec.__dict__ for spec in self.inputs],
            "outputs": [spec.__dict__ for spec in self.outputs],
            "preprocessing": self.preprocessing,
            "source": self.source,
        }
        return {PREFIX + k: (json.dumps(v) if k in JSON_KEYS else str(v)) for k, v in plain.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: json.loads(v) if k.removeprefix(PREFIX) in JSON_KEYS else v
                for k, v in self.to_metadata().items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str = "model") -> ModelContract:
        """Parse and check ONNX metadata; ContractError names the first missing or malformed key."""
        missing = [PREFIX + k for k in KEYS if PREFIX + k not in metadata]
        if missing:
            raise ContractError(f"{where}: not a cmsdl model (ONNX metadata lacks {', '.join(missing)})")
        parsed = {k: parse_value(k, metadata[PREFIX + k], where) for k in KEYS}
        parsed["inputs"] = tensor_specs(parsed["inputs"], "inputs", where)
        parsed["outputs"] = tensor_specs(parsed["outputs"], "outputs", where)
        contract = cls(**parsed)
        check_contract(contract, where)
        return contract


def parse_value(key: str, text: str, where: str) -> Any:
    """One metadata value: JSON for the structured keys, a plain string otherwise."""
    if key not in JSON_KEYS:
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ContractError(f"{where}: {PREFIX}{key} is not valid JSON ({str(err)[:100]})") from None


def tensor_specs(value: Any, key: str, where: str) -> list[TensorSpec]:
    """`cmsdl.inputs` / `cmsdl.outputs`: a non-empty list of {"name", "shape": ["batch", sizes...], "dtype"}."""
    if not isinstance(value, list) or not value:
        raise ContractError(f"{where}: {PREFIX}{key} must be a non-empty list of "
                            '{"name", "shape", "dtype"} objects, got ' + json.dumps(value)[:80])
    specs = []
    for i, item in enumerate(value):
        at = f"{where}: {PREFIX}{key}[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "shape", "dtype"}:
            raise ContractError(f'{at}: expected an object with exactly "name", "shape" and "dtype", got '
                                + json.dumps(item)[:80])
        name, shape, dtype = item["name"], item["shape"], item["dtype"]
        if not isinstance(name, str) or not name:
            raise ContractError(f"{at}.name: expected a non-empty string, got {name!r}")
        if dtype not in DTYPES:
            raise ContractError(f"{at}.dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
        if (not isinstance(shape, list) or len(shape) < 2 or not isinstance(shape[0], str)
                or not all(is_size(v) for v in shape[1:])):
            raise ContractError(f'{at}.shape: expected ["batch", positive sizes...], got {json.dumps(shape)[:80]}')
        specs.append(TensorSpec(name, shape, dtype))
    return specs


def is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 31


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_contract(contract: ModelContract, where: str) -> None:
    """The keys agree with each other: one input, classes name the output columns, preprocessing fits the input."""
    if contract.task not in TASKS:
        raise ContractError(f"{where}: {PREFIX}task is {contract.task!r}, expected one of {', '.join(TASKS)}")
    names = contract.class_names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ContractError(f"{where}: {PREFIX}class_names must be a non-empty list of strings, got "
                            f"{json.dumps(names)[:80]}")
    if len(contract.inputs) != 1:
        raise ContractError(f"{where}: {PREFIX}inputs lists {len(contract.inputs)} tensors; cmsdl models take one")
    if contract.outputs[0].shape[1:] != [len(names)]:
        raise ContractError(f"{where}: {PREFIX}outputs[0].shape is {contract.outputs[0].shape}, expected "
                            f"[batch, {len(names)}] (one column per class_names entry)")
    if not isinstance(contract.source, dict):
        raise ContractError(f"{where}: {PREFIX}source must be an object, got {json.dumps(contract.source)[:80]}")
    check_preprocessing(contract.preprocessing, contract.input, where)


def check_preprocessing(pre: Any, spec: TensorSpec, where: str) -> None:
    """`cmsdl.preprocessing` is an object of a known kind whose fields fit the input tensor."""
    at = f"{where}: {PREFIX}preprocessing"
    if not isinstance(pre, dict):
        raise ContractError(f"{at} must be an object, got {json.dumps(pre)[:80]}")
    kind = pre.get("kind", "tabular")
    if kind not in KINDS:
        raise ContractError(f"{at}.kind is {kind!r}, expected one of {', '.join(KINDS)}")
    if not isinstance(pre.get("in_graph", False), bool):
        raise ContractError(f"{at}.in_graph must be true or false (whether the graph applies the preprocessing), "
                            f"got {json.dumps(pre['in_graph'])[:80]}")
    if kind == "image":
        if len(spec.shape) != 4 or not isinstance(pre.get("image", {}), dict):
            raise ContractError(f"{at}: an image model takes [batch, channels, height, width] with an 'image' "
                                f"settings object, got input shape {spec.shape}")
        return
    features = pre.get("feature_names")
    if (not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features)
            or len(set(features)) != len(features)):
        raise ContractError(f"{at}.feature_names must be a non-empty list of distinct strings")
    if spec.shape[1:] != [len(features)]:
        raise ContractError(f"{at}: {len(features)} feature_names but input '{spec.name}' has shape {spec.shape}")
    for key in ("mean", "std"):
        values = pre.get(key)
        if not isinstance(values, list) or len(values) != len(features) or not all(map(is_finite_number, values)):
            raise ContractError(f"{at}.{key} must be {len(features)} finite numbers, one per feature")
    if any(v == 0 for v in pre["std"]):
        raise ContractError(f"{at}.std has a zero; the scaling divides by it")
    if not isinstance(pre.get("source", {}), dict):
        raise ContractError(f"{at}.source must be an object (the fitted record reader's state)")
    defaults = pre.get("defaults", {})
    if (not isinstance(defaults, dict) or not set(defaults) <= set(features)
            or not all(map(is_finite_number, defaults.values()))):
        raise ContractError(f"{at}.defaults must map feature names of feature_names to finite numbers")
