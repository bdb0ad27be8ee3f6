"""The Open Inference Protocol (KServe V2 REST, as spoken by Triton) on `cmsdl serve`, beside its own REST API.

    GET  /v2/health/live   /v2/health/ready   /v2 (server metadata)
    GET  /v2/models/{name}[/versions/{v}]             inputs and outputs: name, datatype, shape (-1: any batch)
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer       typed tensors, JSON or with binary data

An infer request names the model's input tensor (e.g. ``features``, FP32 [-1, 42]) with its datatype and shape,
its values in ``data`` (flat or nested) or, with the binary-tensor extension, as ``binary_data_size`` bytes
after a JSON header of ``Inference-Header-Content-Length`` bytes. Image models also take their input as BYTES
of PNG files, shape [batch] (in JSON: base64 strings). Outputs come back as JSON ``data``, or as binary data when
an output asks for ``"binary_data": true`` (or the request for ``"binary_data_output": true``). Every error is a
4xx ``{"error": "..."}`` naming the tensor and what was expected. Imports no torch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

import cmsdl
from cmsdl.inference import InputError, Prediction, Predictor, TensorSpec
from cmsdl.inference.arrays import tensor_from_json
from cmsdl.serve.bodies import HTTPError, Limits, parse_json, read_body
from cmsdl.serve.metrics import record_batch
from cmsdl.serve.store import ModelStore

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8", "int8": "INT8",
             "int32": "INT32", "int64": "INT64", "bool": "BOOL"}
NUMPY_TYPES = {datatype: np.dtype(name) for name, datatype in DATATYPES.items()}
MAX_DIMS = 8
EXTENSIONS = ["binary_tensor_data"]


def v2_routes(store: ModelStore, limits: Limits, gate: asyncio.Semaphore) -> APIRouter:
    """The V2 endpoints over `store`; infer bodies are bounded by `limits` and run behind `gate`."""
    router = APIRouter(prefix="/v2")

    @router.get("/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready")
    def ready(request: Request) -> Response:
        is_ready = bool(request.app.state.ready)
        return Response(orjson.dumps({"ready": is_ready}), 200 if is_ready else 503, media_type="application/json")

    @router.get("")
    def server_metadata() -> dict[str, Any]:
        return {"name": "cmsdl", "version": cmsdl.__version__, "extensions": EXTENSIONS}

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return metadata(name, served(store, name, version), store.get(name))

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        store.get(name)
        return {"name": name, "version": served(store, name, version), "ready": True}

    @router.post("/models/{name}/infer")
    @router.post("/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        predictor = store.get(name)
        version = served(store, name, version)
        header_length = declared_header_length(request)
        limit = limits.json_bytes if header_length is None else limits.npy_bytes
        body = await read_body(request, limit, limits.body_timeout_s)
        model = Model(name, version, predictor)
        if predictor.kind == "tabular" and len(body) <= limits.inline_bytes:
            content, length = answer_infer(model, body, header_length, limits)
        else:
            async with gate:
                content, length = await run_in_threadpool(answer_infer, model, body, header_length, limits)
        if length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(length)})

    return router


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    predictor: Predictor


def served(store: ModelStore, name: str, version: str | None) -> str:
    """The served version of model `name`; 404 if `version` is given and is another one."""
    store.get(name)
    current = store.version(name)
    if version is not None and version != current:
        raise HTTPError(404, f"model {name!r} has no version {version!r}; the served version is {current}")
    return current


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": DATATYPES[spec.dtype],
            "shape": [size if isinstance(size, int) else -1 for size in spec.shape]}


def metadata(name: str, version: str, predictor: Predictor) -> dict[str, Any]:
    """Model metadata: the graph's input and its (first) output, the one predict returns."""
    contract = predictor.contract
    return {"name": name, "versions": [version], "platform": "onnxruntime_onnx",
            "inputs": [tensor_metadata(contract.input)], "outputs": [tensor_metadata(contract.outputs[0])],
            "parameters": {"task": contract.task, "class_names": contract.class_names, "kind": predictor.kind}}


def declared_header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise HTTPError(400, f"Inference-Header-Content-Length: {value[:40]!r}, expected a byte count")
    return int(value)


def answer_infer(model: Model, body: bytes, header_length: int | None, limits: Limits) -> tuple[bytes, int | None]:
    """Decode, predict and encode one infer request: (response body, its JSON header length if it has binary
    data). Input errors become 400s."""
    try:
        request, binary = split_body(body, header_length)
        inputs = decode_inputs(request, binary, model.predictor, limits)
        prediction = predict(model.predictor, inputs)
        record_batch(model.name, "infer", len(prediction.outputs))
        return encode_response(request, model, prediction)
    except InputError as err:
        raise HTTPError(400, str(err)) from None


def split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    """The request's JSON header as a dict, and the binary data after it."""
    if header_length is not None and header_length > len(body):
        raise InputError(f"Inference-Header-Content-Length: {header_length}, but the body has only {len(body)} bytes")
    view = memoryview(body)
    end = len(body) if header_length is None else header_length
    request = parse_json(view[:end], "request")
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError("request: expected a JSON object with an 'inputs' list of tensors")
    return request, view[end:]


def decode_inputs(request: dict[str, Any], binary: memoryview, predictor: Predictor,
                  limits: Limits) -> np.ndarray | list[bytes]:
    """The model's one input from the request's tensors: an array, or PNG files for BYTES."""
    spec = predictor.contract.input
    expected = describe(spec, predictor)
    tensors = request["inputs"]
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InputError(f"inputs[{i}]: expected an object with a 'name', 'datatype', 'shape' and data")
        if tensor["name"] != spec.name:
            raise InputError(f"input {tensor['name'][:64]!r}: unknown; this model takes {expected}")
    if len(tensors) != 1:
        raise InputError(f"input '{spec.name}': missing; this model takes {expected}" if not tensors else
                         f"input '{spec.name}': given {len(tensors)} times, expected once")
    value = decode_tensor(tensors[0], binary, spec, predictor.kind, limits)
    used = parameters(tensors[0]).get("binary_data_size", 0)
    if len(binary) != used:
        raise InputError(f"binary data: {len(binary)} bytes after the JSON header, but the inputs declare {used}")
    return value


def describe(spec: TensorSpec, predictor: Predictor) -> str:
    meta = tensor_metadata(spec)
    png = " (or BYTES [-1] of PNG files)" if predictor.kind == "image" else ""
    return f"'{spec.name}' {meta['datatype']} {meta['shape']}{png}"


def decode_tensor(tensor: dict[str, Any], binary: memoryview, spec: TensorSpec, kind: str,
                  limits: Limits) -> np.ndarray | list[bytes]:
    name, datatype = spec.name, tensor.get("datatype")
    shape = tensor_shape(tensor, name)
    expected = DATATYPES[spec.dtype]
    if datatype == "BYTES" and kind == "image":
        return png_files(tensor, binary, shape, limits)
    if datatype != expected:
        also = " or BYTES (PNG files)" if kind == "image" else ""
        raise InputError(f"input '{name}': datatype {str(datatype)[:16]!r}, expected {expected}{also}")
    wanted = [size if isinstance(size, int) else -1 for size in spec.shape]
    if len(shape) != len(wanted) or any(w != -1 and w != s for w, s in zip(wanted, shape)) or shape[0] < 1:
        raise InputError(f"input '{name}': shape {shape}, expected {wanted} with a batch of at least 1")
    dtype, count = NUMPY_TYPES[expected], math.prod(shape)
    if "binary_data_size" in parameters(tensor):
        size = binary_size(tensor, name, len(binary))
        if size != count * dtype.itemsize:
            raise InputError(f"input '{name}': binary_data_size {size}, but shape {shape} of {expected} takes "
                             f"{count * dtype.itemsize} bytes")
        return np.frombuffer(binary[:size], dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if "data" not in tensor:
        raise InputError(f"input '{name}': no 'data' and no binary_data_size parameter")
    if shape[0] > limits.batch_items:
        raise InputError(f"input '{name}': batch of {shape[0]} in JSON; the limit is {limits.batch_items} "
                         "(send binary data)")
    array = tensor_from_json(tensor["data"], spec.dtype, f"input '{name}'")
    if array.size != count:
        raise InputError(f"input '{name}': {array.size} values in 'data', but shape {shape} holds {count}")
    return array.reshape(shape)


def parameters(item: dict[str, Any]) -> dict[str, Any]:
    """An object's 'parameters' (none if absent); anything but an object there is refused."""
    value = item.get("parameters", {})
    if not isinstance(value, dict):
        raise InputError(f"{str(item.get('name', 'request'))[:64]!r}: 'parameters' must be an object")
    return value


def tensor_shape(tensor: dict[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 0 < len(shape) <= MAX_DIMS
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40 for s in shape)):
        raise InputError(f"input '{name}': shape {str(shape)[:60]}, expected a list of 1 to {MAX_DIMS} sizes >= 0")
    return shape


def binary_size(tensor: dict[str, Any], name: str, available: int) -> int:
    size = parameters(tensor)["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= available:
        raise InputError(f"input '{name}': binary_data_size {str(size)[:20]}, expected a byte count of at most the "
                         f"{available} bytes after the JSON header")
    return size


def png_files(tensor: dict[str, Any], binary: memoryview, shape: list[int], limits: Limits) -> list[bytes]:
    """BYTES elements as PNG files: length-prefixed in binary data, base64 strings in JSON."""
    name = tensor["name"]
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not 1 <= shape[0] <= limits.batch_items:
        raise InputError(f"input '{name}': BYTES shape {shape}, expected [batch] or [batch, 1] of PNG files, "
                         f"batch 1 to {limits.batch_items}")
    if "binary_data_size" in parameters(tensor):
        return length_prefixed(binary[:binary_size(tensor, name, len(binary))], shape[0], name)
    data = tensor.get("data")
    flat = data if isinstance(data, list) and all(isinstance(d, str) for d in data) else None
    if flat is None or len(flat) != shape[0]:
        raise InputError(f"input '{name}': expected 'data' as a list of {shape[0]} base64-encoded PNG strings")
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (binascii.Error, ValueError):
        raise InputError(f"input '{name}': an element of 'data' is not base64; send PNG files base64-encoded "
                         "(or as binary data)") from None


def length_prefixed(data: memoryview, count: int, name: str) -> list[bytes]:
    """The BYTES binary encoding: each element is a 4-byte little-endian length followed by its bytes."""
    items, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InputError(f"input '{name}': BYTES binary data cut inside an element's length")
        size = int.from_bytes(data[offset:offset + 4], "little")
        if offset + 4 + size > len(data):
            raise InputError(f"input '{name}': BYTES element {len(items)} declares {size} bytes, beyond the data")
        items.append(bytes(data[offset + 4:offset + 4 + size]))
        offset += 4 + size
    if len(items) != count:
        raise InputError(f"input '{name}': {len(items)} BYTES elements in the binary data, shape declares {count}")
    return items


def predict(predictor: Predictor, inputs: np.ndarray | list[bytes]) -> Prediction:
    if isinstance(inputs, list):
        return predictor.predict_images(inputs)
    return predictor.run(inputs)


def encode_response(request: dict[str, Any], model: Model, prediction: Prediction) -> tuple[bytes, int | None]:
    """The response header (and binary output data, if asked for) as (body, header length or None)."""
    spec = model.predictor.contract.outputs[0]
    binary = bool(parameters(request).get("binary_data_output", False))
    requested = request.get("outputs") or []
    if not isinstance(requested, list):
        raise InputError(f"outputs: expected a list of {{\"name\": \"{spec.name}\"}} objects")
    for wanted in requested:
        if not isinstance(wanted, dict) or wanted.get("name") != spec.name:
            shown = wanted.get("name") if isinstance(wanted, dict) else wanted
            raise InputError(f"output {str(shown)[:64]!r}: unknown; this model returns '{spec.name}'")
        binary = bool(parameters(wanted).get("binary_data", binary))
    values = np.ascontiguousarray(prediction.outputs)
    output: dict[str, Any] = {"name": spec.name, "datatype": DATATYPES[values.dtype.name], "shape": list(values.shape)}
    if binary:
        output["parameters"] = {"binary_data_size": values.nbytes}
    else:
        output["data"] = values.ravel()
    response = {"model_name": model.name, "model_version": model.version, "outputs": [output]}
    if isinstance(request.get("id"), str):
        response["id"] = request["id"]
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, None
    return header + values.astype(values.dtype.newbyteorder("<")).tobytes(), len(header)
