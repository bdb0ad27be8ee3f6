"""`cmsdl serve`: a REST service for a directory of exported ONNX models (successor of the seed's TFaaS).

    GET    /health                     liveness                    GET /ready   readiness (models loaded)
    GET    /models                     served models               GET /models/{name}   a model's contract
    POST   /models/{name}/predict      JSON {"inputs"|"rows"|"records"|"images"|"hits": [...]} or a .npy body
    PUT    /models/{name}              upload (raw ONNX bytes; Authorization: Bearer <token> if configured)
    DELETE /models/{name}              remove (same guard)
    /v2/...                            the Open Inference Protocol (KServe V2, Triton's HTTP API): cmsdl.serve.v2
    GET    /metrics                    Prometheus text format: cmsdl.serve.metrics

Every bad request gets a 4xx JSON ``{"error": "..."}`` that names the problem; the service keeps serving.
Bodies are parsed and predicted in worker threads, a few at a time (bodies.Limits), so `/health` always answers;
small requests for tabular models are answered on the event loop (microseconds: a thread hop would cost more).
Runs on cmsdl.inference: no torch.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cmsdl.errors import ConfigError
from cmsdl.inference import InputError, Predictor
from cmsdl.serve.bodies import JSON_TYPES, NPY_TYPES, HTTPError, Limits, answer, media_type, read_body
from cmsdl.serve.fast import FastPaths
from cmsdl.serve.metrics import RequestMetrics, metrics_text
from cmsdl.serve.store import ModelNameError, ModelStore, RepositoryModelError, UnknownModelError, check_name
from cmsdl.serve.v2 import v2_routes

log = logging.getLogger(__name__)
V2_MODEL_PATH = re.compile(r"models/(.+?)(?:/versions/[^/]*)?(?:/infer|/ready)?")


def create_app(models: str, token: str | None = None, threads: int | None = None, read_only: bool = False,
               limits: Limits | None = None) -> FastAPI:
    """The service for the models in directory `models`; PUT/DELETE need `token` if given, and are off if
    `read_only`."""
    if token is not None and not token.strip():
        raise ConfigError("token: empty (CMSDL_SERVE_TOKEN=\"\"); set a token, or unset it and use read_only=true")
    limits = limits or Limits()
    store = ModelStore(models, threads=threads)
    gate = asyncio.Semaphore(limits.parallel)
    app = ServiceApp(title="cmsdl model service", version="1", lifespan=load_models_at_start)
    app.state.store, app.state.ready = store, False
    add_error_handlers(app)
    app.include_router(health_routes())
    app.include_router(model_read_routes(store))
    app.include_router(predict_routes(store, limits, gate))
    app.include_router(model_write_routes(store, limits, gate, WriteGuard(token, read_only)))
    app.include_router(v2_routes(store, limits, gate))
    app.include_router(unknown_model_paths())  # last: it answers whatever the routes above do not
    app.front = RequestMetrics(FastPaths(app.framework, store, limits), served=store.has)
    return app


class ServiceApp(FastAPI):
    """FastAPI, with every HTTP request going first through `front`: the metrics, then the fast path for small
    tabular predictions, which hands everything else to the framework (`framework`)."""

    front: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.front is not None:
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def load_models_at_start(app: FastAPI) -> AsyncIterator[None]:
    """Load every model of the directory before the first request; /ready answers 200 from then on."""
    app.state.store.load_all()
    app.state.ready = True
    yield


def health_routes() -> APIRouter:
    """GET /health (the process answers) and GET /ready (the models are loaded)."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    def ready(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        store = request.app.state.store
        return JSONResponse({"status": "ready", "models": len(store.names()), "invalid_files": store.errors})

    @router.get("/metrics")
    def metrics() -> Response:
        content, content_type = metrics_text()
        return Response(content, media_type=content_type)

    return router


def model_read_routes(store: ModelStore) -> APIRouter:
    """GET /models (every served model) and GET /models/{name} (one model's contract)."""
    router = APIRouter()

    @router.get("/models")
    def list_models() -> dict[str, Any]:
        return {"models": [summary(name, store.get(name)) for name in store.names()]}

    @router.get("/models/{name}")
    def show_model(name: str) -> dict[str, Any]:
        return {"name": name, **store.get(name).contract.to_dict()}

    return router


def predict_routes(store: ModelStore, limits: Limits, gate: asyncio.Semaphore) -> APIRouter:
    """POST /models/{name}/predict: a JSON or .npy body, parsed and predicted in a worker thread behind `gate`."""
    router = APIRouter()

    @router.post("/models/{name}/predict")
    async def predict(name: str, request: Request) -> Response:
        predictor = store.get(name)
        content_type = media_type(request)
        if content_type not in NPY_TYPES + JSON_TYPES:
            raise HTTPError(415, f"content type {content_type!r}: send application/json or application/x-npy")
        limit = limits.npy_bytes if content_type in NPY_TYPES else limits.json_bytes
        body = await read_body(request, limit, limits.body_timeout_s)
        if predictor.kind == "tabular" and len(body) <= limits.inline_bytes:
            return Response(answer(name, predictor, content_type, body, limits), media_type="application/json")
        async with gate:
            content = await run_in_threadpool(answer, name, predictor, content_type, body, limits)
        return Response(content, media_type="application/json")

    return router


@dataclass(frozen=True)
class WriteGuard:
    """Who may upload and delete models: nobody if `read_only`, else holders of `token` (anyone if None)."""

    token: str | None
    read_only: bool

    def check(self, request: Request) -> None:
        """Raise the 403 or 401 that `request` earns, if any."""
        if self.read_only:
            raise HTTPError(403, "this service is read-only (read_only=true): uploads and deletions are off")
        if self.token is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
            raise HTTPError(401, "this operation needs 'Authorization: Bearer <token>' with the service's token")


def model_write_routes(store: ModelStore, limits: Limits, gate: asyncio.Semaphore, guard: WriteGuard) -> APIRouter:
    """PUT /models/{name} (upload raw ONNX bytes) and DELETE /models/{name}, both behind `guard`."""
    router = APIRouter()

    @router.put("/models/{name}")
    async def upload(name: str, request: Request) -> JSONResponse:
        guard.check(request)
        check_name(name)
        body = await read_body(request, limits.model_bytes, limits.body_timeout_s)
        try:
            async with gate:
                predictor, replaced = await run_in_threadpool(store.put, name, body)
        except (ModelNameError, RepositoryModelError):
            raise
        except ValueError as err:
            raise HTTPError(422, f"upload {name!r} rejected, the served model is unchanged: {err}") from None
        except OSError as err:
            raise HTTPError(507, f"upload {name!r} not installed, the served model is unchanged: cannot write "
                                 f"the model file ({err.strerror})") from None
        return JSONResponse(summary(name, predictor), status_code=200 if replaced else 201)

    @router.delete("/models/{name}")
    def delete(name: str, request: Request) -> dict[str, str]:
        guard.check(request)
        store.delete(name)
        return {"deleted": name}

    return router


def unknown_model_paths() -> APIRouter:
    """Anything else under /models/, such as a model name with a path in it (../x): 400 naming it, else 404;
    and anything else under /v2/."""
    router = APIRouter()

    @router.api_route("/models/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    def bad_path(rest: str) -> None:
        check_name(rest.removesuffix("/predict"))
        raise HTTPError(404, f"no endpoint /models/{rest}")

    @router.api_route("/v2/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    def bad_v2_path(rest: str) -> None:
        model = V2_MODEL_PATH.fullmatch(rest)
        if model and ".." in model[1]:
            check_name(model[1])
        raise HTTPError(404, f"no endpoint /v2/{rest[:200]}")

    return router


def add_error_handlers(app: FastAPI) -> None:
    """Each error type of the service as its 4xx JSON answer."""
    statuses: dict[type[Exception], int] = {UnknownModelError: 404, ModelNameError: 400, InputError: 422,
                                            RepositoryModelError: 409}

    async def known_error(request: Request, err: Exception) -> JSONResponse:
        status = next(code for kind, code in statuses.items() if isinstance(err, kind))
        return JSONResponse({"error": str(err)}, status_code=status)

    async def http_error(request: Request, err: HTTPError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    async def framework_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    app.add_exception_handler(HTTPError, http_error)
    app.add_exception_handler(HTTPException, framework_error)
    for error_type in statuses:
        app.add_exception_handler(error_type, known_error)


def summary(name: str, predictor: Predictor) -> dict[str, Any]:
    contract = predictor.contract
    return {"name": name, "task": contract.task, "kind": predictor.kind, "class_names": contract.class_names,
            "inputs": [spec.__dict__ for spec in contract.inputs]}
