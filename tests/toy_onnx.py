"""Small cmsdl-contract ONNX models built with onnx.helper (no training): a tabular softmax classifier over named
features, a workflow-action model that reads records, and an image model over uint8 PNG pixels or hits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def tabular_contract(features: list[str], classes: list[str], defaults: dict[str, float] | None = None,
                     source: dict[str, Any] | None = None, scaling: tuple[list[float], list[float]] | None = None,
                     in_graph: bool | None = None) -> dict[str, Any]:
    """The cmsdl.* metadata of a tabular classifier (standardised with `scaling` = (mean, std), else 0 and 1;
    `in_graph` recorded when given, as cmsdl writes it since the graph standardises its raw input)."""
    mean, std = scaling or ([0.0] * len(features), [1.0] * len(features))
    preprocessing = {"kind": "tabular", "task": "classification", "feature_names": features, "class_names": classes,
                     "mean": mean, "std": std, "source": source or {}}
    if defaults is not None:
        preprocessing["defaults"] = defaults
    if in_graph is not None:
        preprocessing["in_graph"] = in_graph
    return {"version": "test", "task": "classification", "class_names": classes,
            "inputs": [{"name": "features", "shape": ["batch", len(features)], "dtype": "float32"}],
            "outputs": [{"name": "probabilities", "shape": ["batch", len(classes)], "dtype": "float32"}],
            "preprocessing": preprocessing, "source": {"checkpoint": "toy"}}


def image_contract(channels: int, size: int, classes: list[str]) -> dict[str, Any]:
    """The cmsdl.* metadata of an image classifier whose hits2png settings render xy and rz projections."""
    image = {"projections": ["xy", "rz"][:channels], "channels": "projections", "size": [size, size]}
    return {"version": "test", "task": "classification", "class_names": classes,
            "inputs": [{"name": "images", "shape": ["batch", channels, size, size], "dtype": "uint8"}],
            "outputs": [{"name": "probabilities", "shape": ["batch", len(classes)], "dtype": "float32"}],
            "preprocessing": {"kind": "image", "class_names": classes, "shape": [channels, size, size],
                              "dtype": "uint8", "scale": 1 / 255, "image": image},
            "source": {"checkpoint": "toy"}}


def softmax_graph(n_in: int, n_out: int, image: tuple[int, int] | None = None, seed: int = 0,
                  scaling: tuple[list[float], list[float]] | None = None) -> onnx.GraphProto:
    """input → (image: cast, global average pool, flatten; `scaling`: (x - mean) / std) → MatMul → Add → Softmax
    → probabilities."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=n_out).astype(np.float32), "b")
    nodes, x, initializers = [], "features", [weights, bias]
    if scaling:
        initializers += [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in zip(("mean", "std"), scaling)]
        nodes += [helper.make_node("Sub", ["features", "mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "std"], ["standardised"])]
    if image:
        x = "images"
        nodes += [helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
                  helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["flat"])]
    nodes += [helper.make_node("MatMul", ["flat" if image else "standardised" if scaling else x, "W"], ["logits0"]),
              helper.make_node("Add", ["logits0", "b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    shape = ["batch", n_in, *image] if image else ["batch", n_in]
    inputs = [helper.make_tensor_value_info(x, TensorProto.UINT8 if image else TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out])]
    return helper.make_graph(nodes, "toy", inputs, outputs, initializers)


def model_bytes(graph: onnx.GraphProto, contract: dict[str, Any]) -> bytes:
    """The graph with `contract` as cmsdl.* metadata (values that are not strings are JSON-encoded)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)
    for key, value in contract.items():
        model.metadata_props.add(key=f"cmsdl.{key}", value=value if isinstance(value, str) else json.dumps(value))
    return model.SerializeToString()


def top_model(n_features: int = 45, defaults: dict[str, float] | None = None) -> bytes:
    """A 45-feature signal/background model like the top-tagging one; `defaults` declared in its contract."""
    features = [f"f{i:02d}" for i in range(n_features)]
    return model_bytes(softmax_graph(n_features, 2), tabular_contract(features, ["background", "top"], defaults))


def workflow_model() -> bytes:
    """A workflow-action model that reads workflow records (exit codes 50660 and 84), every count defaulting to 0."""
    names = [f"{code}|{status}" for code in ("50660", "84", "other") for status in ("good", "bad")]
    matrix = {"per_site": False, "min_code_workflows": 2, "max_codes": None, "log_scale": True, "codes": [50660, 84],
              "sites": []}
    source = {"kind": "workflow_actions", "matrix": matrix}
    contract = tabular_contract(names, ["acdc", "clone"], dict.fromkeys(names, 0.0), source)
    return model_bytes(softmax_graph(len(names), 2), contract)


def image_model(channels: int = 2, size: int = 32) -> bytes:
    """An image classifier over uint8 [batch, channels, size, size] pixels (PNG or rendered hits)."""
    return model_bytes(softmax_graph(channels, 3, image=(size, size)), image_contract(channels, size, ["a", "b", "c"]))


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
