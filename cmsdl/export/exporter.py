"""`cmsdl export ckpt=... out=model.onnx`: a trained checkpoint → an ONNX model that carries its own contract.

The exported graph is the fitted numeric preprocessing (tabular: (x - mean) / std; image networks scale their uint8
pixels themselves), the network and its output activation (class probabilities, or the regression prediction), with
a dynamic batch axis: it takes raw features, so production code needs no preprocessing of its own. The checkpoint's
preprocessing is also documented in the ONNX metadata, marked `in_graph` (see cmsdl.inference.metadata), with the
record → feature builder that no graph can hold. Before the file appears, onnx.checker runs and onnxruntime's
outputs on raw inputs are compared with PyTorch's network on the same inputs preprocessed by cmsdl's Python code,
at several batch sizes, on real samples of the test split, which `cmsdl train` stores in the checkpoint (so the
training data need not be readable); past the tolerance the export fails and writes nothing. Optional siblings: fp16 and dynamic-int8 models; `optimize` applies onnxruntime's offline graph
optimisation. All files are written together at the end, or none.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import cmsdl
from cmsdl.callbacks import CHECKPOINT_KEY, PARITY_SAMPLES, split_samples
from cmsdl.checkpoint import (checkpoint_task, load_checkpoint, parity_inputs, resolve_checkpoint, restore,
                              restore_model)
from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.export import triton
from cmsdl.export.graph import (InferenceGraph, ParityError, check_parity, graph_scaling, pytorch_reference,
                                 raw_inputs)
from cmsdl.inference.metadata import ModelContract, TensorSpec
from cmsdl.io import write_files_atomic

log = logging.getLogger(__name__)
INPUT_NAMES = {"tabular": "features", "image": "images"}
OPTIMIZATION_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def sample_inputs(datamodule: Any, n: int) -> torch.Tensor:
    """Up to n real model inputs from the test split (the val split if test is empty), in the data's dtype
    (float32 features; uint8 images, which the image networks scale themselves, so the graph takes raw pixels)."""
    samples = split_samples(datamodule, n)
    if samples is None:
        raise CmsdlError("export: the checkpoint's data has no test or validation samples for the parity check")
    return samples


def model_and_samples(checkpoint: dict[str, Any], ckpt: Path, cfg: DictConfig) -> tuple[nn.Module, torch.Tensor]:
    """The trained model and up to parity.samples (at most PARITY_SAMPLES) inputs for the parity check: those stored
    in the checkpoint, or, for a checkpoint without them (or when `data` overrides say where to read them), from the
    checkpoint's data."""
    n = min(cfg.parity.samples, PARITY_SAMPLES)  # the largest batch size compared: more would never be read
    stored = parity_inputs(checkpoint, ckpt)
    if stored is not None and not cfg.get("data"):
        return restore_model(checkpoint), stored[:n]
    if stored is None:
        print(f"export: {ckpt} holds no parity samples (written by an older cmsdl): reading them from its data")
    datamodule, model = restore(checkpoint, cfg.get("data"))
    return model, sample_inputs(datamodule, n)


def build_contract(checkpoint: dict[str, Any], model: nn.Module, samples: torch.Tensor, ckpt_path: str) -> ModelContract:
    """The metadata of the exported model: task, classes, tensors, preprocessing, provenance."""
    context = checkpoint[CHECKPOINT_KEY]
    preprocessing = context["preprocessing"]
    kind = preprocessing.get("kind", "tabular")
    task = checkpoint_task(checkpoint)
    with torch.no_grad():
        n_out = InferenceGraph(model).eval()(samples[:2]).shape[1]
    config = context.get("config", {})
    return ModelContract(
        version=cmsdl.__version__,
        task=task,
        class_names=list(getattr(model, "class_names", [])) or list(preprocessing.get("class_names", [])),
        inputs=[TensorSpec(INPUT_NAMES.get(kind, "input"), ["batch", *samples.shape[1:]],
                           str(samples.numpy().dtype))],
        outputs=[TensorSpec("probabilities" if task == "classification" else "prediction",
                            ["batch", int(n_out)], "float32")],
        preprocessing={**preprocessing, "in_graph": True},
        source={
            "checkpoint": str(ckpt_path),
            "run_dir": config.get("paths", {}).get("output_dir"),
            "experiment": config.get("tags"),
            "trained_with": context.get("version"),
            "precision": "float32",
        },
    )


def to_onnx(graph: nn.Module, example: torch.Tensor, contract: ModelContract, opset: int) -> onnx.ModelProto:
    """Trace the graph with a batch of at least 2 (so no batch size is frozen in) and attach the metadata."""
    buffer = io.BytesIO()
    input_name, output_name = contract.input.name, contract.outputs[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: no extra dependency, and stable for MLPs and ResNets.
        torch.onnx.export(graph, (example,), buffer, dynamo=False, input_names=[input_name],
                          output_names=[output_name], opset_version=opset,
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    attach_metadata(model, contract)
    onnx.checker.check_model(model, full_check=True)
    return model


def attach_metadata(model: onnx.ModelProto, contract: ModelContract) -> None:
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "cmsdl", cmsdl.__version__
    model.doc_string = f"cmsdl {contract.task} model; classes: {', '.join(contract.class_names)}"


def optimize(model_bytes: bytes, level: str, contract: ModelContract) -> onnx.ModelProto:
    """onnxruntime's offline graph optimisation; the metadata is carried over."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[level]
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    attach_metadata(model, contract)
    return model


def quantize_int8(model_bytes: bytes, contract: ModelContract) -> onnx.ModelProto:
    """Dynamic int8 quantisation of weights (CPU inference) of the plain fp32 graph; metadata carried over.

    The quantiser needs the type of every weight, which onnxruntime's extended and all-level fusions drop
    (`Unable to find data type for weight_name=...`): it runs before any graph optimisation.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model_bytes)
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        model = onnx.load(str(target))
    attach_metadata(model, contract)
    return model


def sibling(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}.{tag}{out.suffix}")


def report_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.export.json")


FORMATS = ("onnx", "triton")


def check_options(cfg: DictConfig) -> Path:
    """The output path, once every option is known to be valid (before any work is done)."""
    out = Path(cfg.out)
    if out.suffix != ".onnx":
        raise ConfigError(f"out: got {str(out)!r}, expected a file name ending in .onnx")
    samples = cfg.parity.samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"parity.samples: got {samples!r}, expected an integer >= 1 (at most {PARITY_SAMPLES} "
                          "are compared)")
    if cfg.optimize and cfg.optimize not in OPTIMIZATION_LEVELS:
        raise ConfigError(f"optimize: got {cfg.optimize!r}, expected one of {', '.join(OPTIMIZATION_LEVELS)} or null")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format: got {cfg.format!r}, expected one of {', '.join(FORMATS)}")
    return out


def triton_target(cfg: DictConfig, out: Path) -> tuple[triton.RepositoryModel, triton.TritonSettings] | None:
    """format=triton: the repository entry (name: `name`, else the stem of `out`) and its settings, checked."""
    if cfg.format != "triton":
        return None
    for option in ("quantize", "fp16"):
        if cfg[option]:
            raise ConfigError(f"{option}=true: a Triton model version holds one model file; export the "
                              f"{'int8' if option == 'quantize' else 'fp16'} sibling with format=onnx")
    settings = triton.triton_settings(OmegaConf.to_container(cfg.triton))
    return triton.repository_model(cfg.repo, cfg.name or out.stem), settings


def step(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one export step; a failure inside onnx / onnxruntime becomes one line saying which step failed."""
    try:
        return fn(*args)
    except CmsdlError:
        raise
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise CmsdlError(f"export: {what} failed ({type(err).__name__}: {first_line}); nothing written") from None


def written(where: str, write: Callable[..., Any], *args: Any) -> Any:
    """Run a writer; a file-system failure (permissions, a full disk) becomes one line (the writers leave nothing
    behind)."""
    try:
        return write(*args)
    except OSError as err:
        raise CmsdlError(f"export: cannot write {err.filename or where} ({err.strerror or err}); nothing written") \
            from None


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export cfg.ckpt to cfg.out (format=triton: a new version in cfg.repo) after the parity check; returns the
    export report (also written as JSON).

    All-or-nothing: every model and the report are built and checked in memory first, then written under
    temporary names and renamed together, the main model last.
    """
    out = check_options(cfg)
    target = triton_target(cfg, out)
    ckpt = resolve_checkpoint(cfg.ckpt)
    checkpoint = load_checkpoint(ckpt)
    model, samples = model_and_samples(checkpoint, ckpt, cfg)
    contract = build_contract(checkpoint, model, samples, str(ckpt))
    graph = InferenceGraph(model, scaling=graph_scaling(contract.preprocessing)).eval()
    raw = raw_inputs(samples, contract.preprocessing)
    reference = pytorch_reference(model, contract.preprocessing)
    fp32 = step(f"ONNX conversion (opset={cfg.opset})", to_onnx, graph, torch.from_numpy(raw[:2]), contract,
                cfg.opset)
    fp32_bytes = fp32.SerializeToString()
    main_model = fp32
    if cfg.optimize:
        main_model = step(f"optimize={cfg.optimize}", optimize, fp32_bytes, cfg.optimize, contract)
    model_bytes = main_model.SerializeToString()
    parity = step("the parity check", check_parity, model_bytes, reference, raw)
    where = f"{target[0].directory}/<next version>" if target else str(out)
    if parity.worst > cfg.parity.atol:
        raise ParityError(f"export: onnxruntime differs from PyTorch by {parity.worst:.3g} (max abs, per batch size "
                          f"{parity.max_abs_diff}), above parity.atol={cfg.parity.atol}; {where} not written")
    report = {"model": str(out), "opset": cfg.opset, "optimize": cfg.optimize, "contract": contract.to_dict(),
              "parity": {"atol": cfg.parity.atol, "samples": len(samples), "max_abs_diff": parity.max_abs_diff}}
    config = OmegaConf.to_container(cfg)

    def report_json(content: dict[str, Any]) -> bytes:
        return (json.dumps(content | {"config": config}, indent=2) + "\n").encode()

    if target:
        repository_model, settings = target
        report = written(where, triton.write_repository_version, repository_model, contract, settings, model_bytes,
                         report, report_json)
    else:
        files: dict[Path, bytes] = {}
        if cfg.quantize:
            path = sibling(out, "int8")
            files[path], report["int8"] = export_int8(fp32_bytes, reference, raw, contract, cfg.optimize, path)
        if cfg.fp16:
            path = sibling(out, "fp16")
            files[path], report["fp16"] = export_fp16(model, contract, raw, reference, cfg.opset, path)
        files[report_path(out)] = report_json(report)
        files[out] = model_bytes
        written(where, write_files_atomic, files)
    log.info("exported %s: parity max abs diff %.2e over %d samples", report["model"], parity.worst, len(samples))
    return report


def export_int8(fp32_bytes: bytes, reference: Callable[[np.ndarray], np.ndarray], raw: np.ndarray,
                contract: ModelContract, level: str | None, path: Path) -> tuple[bytes, dict[str, Any]]:
    """Dynamic int8 sibling (quantised from the fp32 graph, then optimised at the same level as the main model);
    its parity is reported, not enforced (quantisation changes outputs by design)."""
    quantized = step("quantize=true (dynamic int8)", quantize_int8, fp32_bytes, contract)
    if level:
        quantized = step(f"optimize={level} of the int8 model", optimize, quantized.SerializeToString(), level,
                         contract)
    model_bytes = quantized.SerializeToString()
    parity = step("the int8 parity check", check_parity, model_bytes, reference, raw)
    log.info("int8 model %s: max abs diff to PyTorch fp32 %.3g", path, parity.worst)
    return model_bytes, {"model": str(path), "max_abs_diff": parity.max_abs_diff}


def export_fp16(model: nn.Module, contract: ModelContract, raw: np.ndarray,
                reference: Callable[[np.ndarray], np.ndarray], opset: int, path: Path) -> tuple[bytes, dict[str, Any]]:
    """Half-precision weights and arithmetic (fp32 input, scaling and output) for GPUs; parity checked where it
    runs."""
    fp16_contract = replace(contract, source={**contract.source, "precision": "float16"})
    half_graph = InferenceGraph(copy.deepcopy(model), half=True, scaling=graph_scaling(contract.preprocessing)).eval()
    model_bytes = step("fp16=true", to_onnx, half_graph, torch.from_numpy(raw[:2]), fp16_contract,
                       opset).SerializeToString()
    try:
        parity = check_parity(model_bytes, reference, raw)
        result = {"model": str(path), "max_abs_diff": parity.max_abs_diff}
    except Exception as err:  # onnxruntime's CPU provider lacks some fp16 kernels
        result = {"model": str(path), "max_abs_diff": None, "note": f"not checked on CPU: {err}".splitlines()[0]}
    log.info("fp16 model %s: %s", path, result)
    return model_bytes, result
