"""`cmsdl serve`: a REST service for a directory of exported ONNX models (successor of the seed's TFaaS).

    GET    /health                     liveness                    GET /ready   readiness (models loaded)
    GET    /models                     served models               GET /models/{name}   a model's contract
    POST   /models/{name}/predict      JSON {"inputs"|"rows"|"records"|"images"|"hits": [...]} or a .npy body
    PUT    /models/{name}              upload (raw ONNX bytes; Authorization: Bearer <token> if configured)
    DELETE /models/{name}              remove (same guard)

Every bad request gets a 4xx JSON ``{"error": "..."}`` that names the problem; the service keeps serving.
Runs on cmsdl.inference: no torch.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cmsdl.inference import InputError, Predictor, load_npy
from cmsdl.serve.store import ModelNameError, ModelStore, UnknownModelError, check_name

log = logging.getLogger(__name__)
NPY_TYPES = ("application/x-npy", "application/octet-stream", "application/npy")
JSON_KINDS = ("inputs", "rows", "records", "images", "hits")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_request(body: bytes) -> tuple[str, Any]:
    """The one input kind of a JSON predict request and its payload."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"body: malformed JSON ({err})") from None
    kinds = [k for k in JSON_KINDS if isinstance(doc, dict) and k in doc]
    if len(kinds) != 1 or not isinstance(doc[kinds[0]], list):
        raise HTTPError(400, f"body: expected an object with exactly one list among {', '.join(JSON_KINDS)}")
    return kinds[0], doc[kinds[0]]


def predict_json(predictor: Predictor, kind: str, payload: list) -> dict[str, Any]:
    if kind == "inputs":
        try:
            array = np.asarray(payload, dtype=predictor.contract.input.dtype)
        except (TypeError, ValueError):
            raise InputError("inputs: expected a nested list of numbers (a rectangular tensor)") from None
        return predictor.run(array).to_dict()
    if kind == "images":
        predictor.require_kind("image")
        try:
            images = [base64.b64decode(item, validate=True) for item in payload]
        except (binascii.Error, TypeError, ValueError):
            raise InputError("images: expected base64-encoded PNG strings") from None
        return predictor.predict_images(images).to_dict()
    methods = {"rows": predictor.predict_rows, "records": predictor.predict_records, "hits": predictor.predict_hits}
    return methods[kind](payload).to_dict()


def create_app(models: str, token: str | None = None, max_body_bytes: int = 64 << 20,
               threads: int | None = None) -> FastAPI:
    """The service for the models in directory `models`."""
    store = ModelStore(models, threads=threads)
    app = FastAPI(title="cmsdl model service", version="1")
    app.state.store, app.state.ready = store, False

    @app.on_event("startup")
    def load_models() -> None:
        store.load_all()
        app.state.ready = True

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, err: HTTPError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(UnknownModelError)
    async def unknown_model(request: Request, err: UnknownModelError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=404)

    @app.exception_handler(ModelNameError)
    async def bad_name(request: Request, err: ModelNameError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=422)

    def authorize(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given, f"Bearer {token}"):
            raise HTTPError(401, "this operation needs 'Authorization: Bearer <token>' with the service's token")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "models": len(store.names()), "invalid_files": store.errors})

    @app.get("/models")
    def list_models() -> dict[str, Any]:
        return {"models": [summary(name, store.get(name)) for name in store.names()]}

    @app.get("/models/{name}")
    def show_model(name: str) -> dict[str, Any]:
        return {"name": name, **store.get(name).contract.to_dict()}

    @app.post("/models/{name}/predict")
    async def predict(name: str, request: Request) -> dict[str, Any]:
        predictor = store.get(name)
        body = await read_body(request, max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in NPY_TYPES:
            result = await run_in_threadpool(lambda: predictor.run(load_npy(body)).to_dict())
        elif content_type in ("application/json", ""):
            kind, payload = parse_json_request(body)
            result = await run_in_threadpool(predict_json, predictor, kind, payload)
        else:
            raise HTTPError(415, f"content type {content_type!r}: send application/json or application/x-npy")
        return {"model": name, **result}

    @app.put("/models/{name}")
    async def upload(name: str, request: Request) -> JSONResponse:
        authorize(request)
        body = await read_body(request, max_body_bytes)
        try:
            predictor, replaced = await run_in_threadpool(store.put, name, body)
        except ModelNameError:
            raise
        except ValueError as err:
            raise HTTPError(422, f"upload {name!r} rejected, the served model is unchanged: {err}") from None
        return JSONResponse(summary(name, predictor), status_code=200 if replaced else 201)

    @app.delete("/models/{name}")
    def delete(name: str, request: Request) -> dict[str, str]:
        authorize(request)
        store.delete(name)
        return {"deleted": name}

    @app.api_route("/models/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    def bad_path(rest: str) -> None:
        """Anything else under /models/, such as a model name with a path in it (../x): 400 naming it."""
        check_name(rest.removesuffix("/predict"))
        raise HTTPError(404, f"no endpoint /models/{rest}")

    return app


def summary(name: str, predictor: Predictor) -> dict[str, Any]:
    contract = predictor.contract
    return {"name": name, "task": contract.task, "kind": predictor.kind, "class_names": contract.class_names,
            "inputs": [spec.__dict__ for spec in contract.inputs]}


def main() -> None:
    from omegaconf import DictConfig

    from cmsdl.config import hydra_app

    def serve(cfg: DictConfig) -> None:
        import uvicorn

        app = create_app(cfg.models, cfg.token, int(cfg.max_body_mb * (1 << 20)), cfg.threads)
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)

    hydra_app("serve")(serve)()
