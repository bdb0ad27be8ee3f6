"""`cmsdl serve`: a REST service for a directory of exported ONNX models (successor of the seed's TFaaS).

    GET    /health                     liveness                    GET /ready   readiness (models loaded)
    GET    /models                     served models               GET /models/{name}   a model's contract
    POST   /models/{name}/predict      JSON {"inputs"|"rows"|"records"|"images"|"hits": [...]} or a .npy body
    PUT    /models/{name}              upload (raw ONNX bytes; Authorization: Bearer <token> if configured)
    DELETE /models/{name}              remove (same guard)

Every bad request gets a 4xx JSON ``{"error": "..."}`` that names the problem; the service keeps serving.
Bodies are parsed and predicted in worker threads, a few at a time (bodies.Limits), so `/health` always answers.
Runs on cmsdl.inference: no torch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cmsdl.errors import ConfigError
from cmsdl.inference import InputError, Predictor
from cmsdl.serve.bodies import JSON_TYPES, NPY_TYPES, HTTPError, Limits, answer, media_type, read_body
from cmsdl.serve.store import ModelNameError, ModelStore, UnknownModelError, check_name

log = logging.getLogger(__name__)


def create_app(models: str, token: str | None = None, threads: int | None = None, read_only: bool = False,
               limits: Limits | None = None) -> FastAPI:
    """The service for the models in directory `models`; PUT/DELETE need `token` if given, and are off if
    `read_only`."""
    if token is not None and not token.strip():
        raise ConfigError("token: empty (CMSDL_SERVE_TOKEN=\"\"); set a token, or unset it and use read_only=true")
    limits = limits or Limits()
    store = ModelStore(models, threads=threads)
    gate = asyncio.Semaphore(limits.parallel)
    app = FastAPI(title="cmsdl model service", version="1")
    app.state.store, app.state.ready = store, False
    add_error_handlers(app)

    @app.on_event("startup")
    def load_models() -> None:
        store.load_all()
        app.state.ready = True

    def authorize(request: Request) -> None:
        if read_only:
            raise HTTPError(403, "this service is read-only (read_only=true): uploads and deletions are off")
        if token is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
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
    async def predict(name: str, request: Request) -> Response:
        predictor = store.get(name)
        content_type = media_type(request)
        if content_type not in NPY_TYPES + JSON_TYPES:
            raise HTTPError(415, f"content type {content_type!r}: send application/json or application/x-npy")
        limit = limits.npy_bytes if content_type in NPY_TYPES else limits.json_bytes
        body = await read_body(request, limit, limits.body_timeout_s)
        async with gate:
            content = await run_in_threadpool(answer, name, predictor, content_type, body, limits)
        return Response(content, media_type="application/json")

    @app.put("/models/{name}")
    async def upload(name: str, request: Request) -> JSONResponse:
        authorize(request)
        check_name(name)
        body = await read_body(request, limits.model_bytes, limits.body_timeout_s)
        try:
            async with gate:
                predictor, replaced = await run_in_threadpool(store.put, name, body)
        except ModelNameError:
            raise
        except ValueError as err:
            raise HTTPError(422, f"upload {name!r} rejected, the served model is unchanged: {err}") from None
        except OSError as err:
            raise HTTPError(507, f"upload {name!r} not installed, the served model is unchanged: cannot write "
                                 f"the model file ({err.strerror})") from None
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


def add_error_handlers(app: FastAPI) -> None:
    """Each error type of the service as its 4xx JSON answer."""
    statuses: dict[type[Exception], int] = {UnknownModelError: 404, ModelNameError: 400, InputError: 422}

    async def known_error(request: Request, err: Exception) -> JSONResponse:
        status = next(code for kind, code in statuses.items() if isinstance(err, kind))
        return JSONResponse({"error": str(err)}, status_code=status)

    async def http_error(request: Request, err: HTTPError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    app.add_exception_handler(HTTPError, http_error)
    for error_type in statuses:
        app.add_exception_handler(error_type, known_error)


def summary(name: str, predictor: Predictor) -> dict[str, Any]:
    contract = predictor.contract
    return {"name": name, "task": contract.task, "kind": predictor.kind, "class_names": contract.class_names,
            "inputs": [spec.__dict__ for spec in contract.inputs]}


def main() -> None:
    from cmsdl.serve.server import main as serve_main

    serve_main()
