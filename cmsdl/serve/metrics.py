"""Prometheus metrics of `cmsdl serve` (GET /metrics): requests, latency and batch sizes per model and status.

    cmsdl_serve_requests_total{model, endpoint, status}          predict (own REST) and infer (V2) requests
    cmsdl_serve_request_seconds{model, endpoint, status}         their latency, from request head to response
    cmsdl_serve_batch_size{model, endpoint}                      rows (or images) per prediction

With several workers (serve.workers > 1) every worker writes its values to the files of prometheus-client's
multiprocess mode in $PROMETHEUS_MULTIPROC_DIR (set by `cmsdl serve` before the workers start), and /metrics adds
them up over all workers, whichever worker answers. A model label is a served model's name or "unknown", so
that clients cannot grow the label set with made-up names. Imports no torch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
MODEL_PATH = re.compile(r"^/(?:v2/)?models/([^/]+)(?:/versions/[^/]+)?/(predict|infer)$")

REQUESTS = Counter("cmsdl_serve_requests", "Predict and infer requests by model, endpoint and HTTP status",
                   ["model", "endpoint", "status"])
LATENCY = Histogram("cmsdl_serve_request_seconds", "Latency of predict and infer requests in seconds",
                    ["model", "endpoint", "status"], buckets=LATENCY_BUCKETS)
BATCH = Histogram("cmsdl_serve_batch_size", "Rows or images per prediction", ["model", "endpoint"],
                  buckets=BATCH_BUCKETS)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


_children: dict[tuple[str, ...], Any] = {}  # labelled metrics by labels: .labels() costs more than the update


def labelled(metric: Any, *labels: str) -> Any:
    key = (metric._name, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def record_batch(model: str, endpoint: str, size: int) -> None:
    labelled(BATCH, model, endpoint).observe(size)


def metrics_text() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process, or of every worker in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware counting and timing predict and infer requests by model, endpoint and status; other paths
    pass straight through. `served(name)` says whether a name may become a label."""

    def __init__(self, app: ASGIApp, served: Callable[[str], bool]) -> None:
        self.app, self.served = app, served

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        match = MODEL_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            model = match[1] if self.served(match[1]) else "unknown"
            labels = (model, match[2], str(status))
            labelled(REQUESTS, *labels).inc()
            labelled(LATENCY, *labels).observe(time.perf_counter() - start)
