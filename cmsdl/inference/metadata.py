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

``cmsdl.preprocessing`` has ``"kind"``: ``"tabular"`` (``feature_names``, ``mean``, ``std``: the model input is
``(raw_features - mean) / std`` in ``feature_names`` order; ``source``: the fitted record → raw-feature builder)
or ``"image"`` (image size, channel names, value scaling).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PREFIX = "cmsdl."
KEYS = ("version", "task", "class_names", "inputs", "outputs", "preprocessing", "source")
JSON_KEYS = ("class_names", "inputs", "outputs", "preprocessing", "source")


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
        """Parse ONNX metadata; a model not exported by cmsdl raises ValueError naming the missing keys."""
        missing = [PREFIX + k for k in KEYS if PREFIX + k not in metadata]
        if missing:
            raise ValueError(f"{where}: not a cmsdl model (ONNX metadata lacks {', '.join(missing)})")
        values = {k: metadata[PREFIX + k] for k in KEYS}
        try:
            parsed = {k: json.loads(v) if k in JSON_KEYS else v for k, v in values.items()}
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: ONNX metadata is not valid JSON ({err})") from None
        parsed["inputs"] = [TensorSpec(**spec) for spec in parsed["inputs"]]
        parsed["outputs"] = [TensorSpec(**spec) for spec in parsed["outputs"]]
        return cls(**parsed)
