"""Request bodies of `cmsdl serve`: read within byte and time limits, parsed and predicted off the event loop.

JSON predict bodies hold exactly one of ``inputs`` (model-ready tensor), ``rows`` (raw features), ``records`` (raw
records), ``images`` (base64 PNGs) or ``hits`` (events of tracker hits); binary ``.npy`` bodies hold a model-ready
tensor and suit big batches (no parsing, no per-number objects). Imports no torch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from cmsdl.inference import InputError, Prediction, Predictor, load_npy
from cmsdl.inference.arrays import tensor_from_json
from cmsdl.serve.metrics import record_batch

NPY_TYPES = ("application/x-npy", "application/octet-stream", "application/npy")
JSON_TYPES = ("application/json", "")
JSON_KINDS = ("inputs", "rows", "records", "images", "hits")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Limits:
    """What one request may cost: body sizes per kind, items per JSON batch, time to send the body, and how many
    requests are parsed and predicted at once in worker threads (the others wait their turn). Requests for tabular
    models with bodies of at most `inline_bytes` are answered on the event loop itself: they take microseconds,
    and the hop to a thread would cost more than the prediction."""

    json_bytes: int = 8 << 20
    npy_bytes: int = 64 << 20
    model_bytes: int = 256 << 20
    batch_items: int = 4096
    body_timeout_s: float = 30.0
    parallel: int = 4
    inline_bytes: int = 16 << 10


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes and 408 if it takes over
    `timeout_s` seconds to arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, f"the body did not arrive within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise HTTPError(400, "the client closed the connection before the body was complete") from None


def parse_json(body: bytes | memoryview, where: str = "body") -> Any:
    """A JSON document, parsed by orjson; what orjson refuses (NaN, integers beyond 64 bits, deep nesting) is
    parsed again by the standard library so that such values are refused by the same checks as before."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(bytes(body))
    except RecursionError:
        raise HTTPError(400, f"{where}: JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, invalid UTF-8, integers of over 4300 digits
        raise HTTPError(400, f"{where}: malformed JSON ({str(err)[:120]})") from None


def parse_json_request(body: bytes, batch_items: int) -> tuple[str, list]:
    """The one input kind of a JSON predict request and its payload (at most `batch_items` items)."""
    doc = parse_json(body)
    kinds = [k for k in JSON_KINDS if isinstance(doc, dict) and k in doc]
    if len(kinds) != 1 or not isinstance(doc[kinds[0]], list):
        raise HTTPError(400, f"body: expected an object with exactly one list among {', '.join(JSON_KINDS)}")
    payload = doc[kinds[0]]
    if len(payload) > batch_items:
        raise HTTPError(413, f"{kinds[0]}: {len(payload)} items in one request; the limit is {batch_items} "
                             "(send a .npy body or several requests)")
    return kinds[0], payload


def predict_json(predictor: Predictor, kind: str, payload: list) -> Prediction:
    if kind == "inputs":
        return predictor.run(tensor_from_json(payload, predictor.contract.input.dtype))
    if kind == "images":
        predictor.require_kind("image")
        return predictor.predict_images([decode_base64(item, i) for i, item in enumerate(payload)])
    methods = {"rows": predictor.predict_rows, "records": predictor.predict_records, "hits": predictor.predict_hits}
    return methods[kind](payload)


def decode_base64(item: Any, i: int) -> bytes:
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise InputError(f"images[{i}]: expected a base64-encoded PNG string") from None


def answer(name: str, predictor: Predictor, content_type: str, body: bytes, limits: Limits) -> bytes:
    """Parse, predict and serialise one request: the response body as JSON bytes."""
    if content_type in NPY_TYPES:
        prediction = predictor.run(load_npy(body))
    else:
        prediction = predict_json(predictor, *parse_json_request(body, limits.batch_items))
    record_batch(name, "predict", len(prediction.outputs))
    result = prediction.to_dict()
    return orjson.dumps({"model": name, **result})
