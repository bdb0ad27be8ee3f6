"""The short way through `cmsdl serve` for small predict and infer requests of tabular models (pure ASGI).

A single-row request costs microseconds to predict, so FastAPI's routing, request objects and dependency solving
would be most of its cost. FastPaths answers POST /models/{name}/predict and /v2/models/{name}[/versions/{v}]/infer
itself when the model is a served tabular one and the whole body (at most Limits.inline_bytes) came with the
request head; anything else (unknown models, big or slow bodies, other paths) goes to the app unchanged, with
the part of the body already read handed on. Answers and errors are the app's own: the same functions make them.
Imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from cmsdl.inference import InputError
from cmsdl.serve.bodies import JSON_TYPES, NPY_TYPES, HTTPError, Limits, answer
from cmsdl.serve.store import ModelStore
from cmsdl.serve.v2 import HEADER_LENGTH, Model, answer_infer

PREDICT = re.compile(r"^/models/([^/]+)/predict$")
INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JSON = b"application/json"


class FastPaths:
    """ASGI middleware answering small tabular predict and infer requests without the framework."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], store: ModelStore,
                 limits: Limits) -> None:
        self.app, self.store, self.limits = app, store, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handler(scope)
        if handler is None:
            await self.app(scope, receive, send)
            return
        first = await receive()
        if first["type"] != "http.request" or first.get("more_body", False):
            await self.app(scope, replaying(first, receive), send)
            return
        status, body, headers = handler(first.get("body", b""))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    def handler(self, scope: Scope) -> Callable[[bytes], tuple[int, bytes, list[tuple[bytes, bytes]]]] | None:
        """The function answering this request from its body, or None if the app should answer it."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or int(length) > self.limits.inline_bytes:
            return None
        path = scope["path"]
        if match := PREDICT.match(path):
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
            predictor = self.tabular(match[1])
            if predictor is None or content_type not in NPY_TYPES + JSON_TYPES:
                return None
            return lambda body: guarded(lambda: (200, answer(match[1], predictor, content_type, body, self.limits),
                                                 [(b"content-type", JSON)]))
        if (match := INFER.match(path)) and (predictor := self.tabular(match[1])):
            version = self.store.version(match[1])
            declared = headers.get(HEADER_LENGTH.encode())
            if match[2] not in (None, version) or (declared is not None and not declared.strip().isdigit()):
                return None
            model = Model(match[1], version, predictor)
            return lambda body: guarded(lambda: infer_answer(model, body, declared, self.limits))
        return None

    def tabular(self, name: str) -> Any:
        predictor = self.store.find(name)
        return predictor if predictor is not None and predictor.kind == "tabular" else None


def infer_answer(model: Model, body: bytes, declared: bytes | None,
                 limits: Limits) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    content, length = answer_infer(model, body, None if declared is None else int(declared), limits)
    if length is None:
        return 200, content, [(b"content-type", JSON)]
    return 200, content, [(b"content-type", b"application/octet-stream"),
                          (HEADER_LENGTH.encode(), str(length).encode())]


def guarded(make: Callable[[], tuple[int, bytes, list[tuple[bytes, bytes]]]]
            ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The answer, or the app's 4xx `{"error": ...}` for the request errors its handlers map."""
    try:
        return make()
    except HTTPError as err:
        return err.status, orjson.dumps({"error": err.message}), [(b"content-type", JSON)]
    except InputError as err:
        return 422, orjson.dumps({"error": str(err)}), [(b"content-type", JSON)]


def replaying(first: Message, receive: Receive) -> Receive:
    """`receive` with `first`, already read, handed out again first."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
