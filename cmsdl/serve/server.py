"""How `cmsdl serve` runs: the start-up checks on writes and tokens, and uvicorn with bounded connections,
in one process or in `workers` processes sharing the port (read-only: an upload would reach one worker only).

A service that accepts uploads (PUT/DELETE) listens beyond loopback only with a token; an empty token is a
configuration error. uvicorn gets a connection limit (503 beyond it), a keep-alive timeout, a cap on header size,
and a deadline for each request's headers, so clients that open connections and never finish a request are
disconnected instead of holding sockets and file descriptors. Imports no torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from omegaconf import DictConfig
from uvicorn.protocols.http import h11_impl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from cmsdl.errors import ConfigError
from cmsdl.serve.bodies import Limits
from cmsdl.serve.metrics import MULTIPROCESS_DIR

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional (uvicorn[standard]); h11 is always there
    HttpToolsProtocol = None

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", "ip6-localhost")
SETTINGS_VARIABLE = "CMSDL_SERVE_APP"  # create_app's arguments as JSON, for the workers


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_write_access(host: str, token: str | None, read_only: bool) -> None:
    """Refuse settings that leave uploads and deletions open to the network, or that look like a token but are
    not one."""
    if token is not None and not str(token).strip():
        raise ConfigError("token: empty (CMSDL_SERVE_TOKEN=\"\"); set a token, or unset it and use read_only=true")
    if not read_only and token is None and not is_loopback(host):
        raise ConfigError(f"host={host}: uploads and deletions (PUT/DELETE) would be open to anyone who can reach "
                          "the service; set a token (CMSDL_SERVE_TOKEN or token=...) or read_only=true")


class ServeConfig(uvicorn.Config):
    """uvicorn's settings plus the request-head deadline that HeaderDeadline protocols read (a module-level class,
    so that several workers receive it pickled)."""

    def __init__(self, app: Any, header_timeout_s: float = 10.0, **settings: Any) -> None:
        super().__init__(app, **settings)
        self.header_timeout_s = float(header_timeout_s)


class HeaderDeadline:
    """A deadline for request heads, mixed into uvicorn's HTTP protocols: a connection that has not sent a
    complete request head `header_timeout_s` seconds after it opened (or after its last response) is closed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        seconds = getattr(self.config, "header_timeout_s", 10.0)  # type: ignore[attr-defined]
        self.loop.call_later(seconds, self._header_deadline, self.cycle)  # type: ignore[attr-defined]

    def _header_deadline(self, cycle_then: Any) -> None:
        """Close the connection if no new request head arrived since the deadline was armed."""
        transport = self.transport  # type: ignore[attr-defined]
        if self.cycle is cycle_then and not transport.is_closing() and not self.responding():  # type: ignore
            transport.close()

    def responding(self) -> bool:
        raise NotImplementedError


class HeaderDeadlineH11(HeaderDeadline, H11Protocol):
    def responding(self) -> bool:
        return self.conn.our_state in (h11.SEND_RESPONSE, h11.SEND_BODY)


if HttpToolsProtocol is not None:
    class HeaderDeadlineHttpTools(HeaderDeadline, HttpToolsProtocol):
        """The same deadline on httptools' parser, several times faster than h11 (uvicorn[standard]), with h11's
        cap on the size of a request head (the URL and headers), over which the request gets 400."""

        head_bytes = 0

        def responding(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def on_message_begin(self) -> None:
            self.head_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self.count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def count_head(self, size: int) -> None:
            self.head_bytes += size
            cap = self.config.h11_max_incomplete_event_size or h11_impl.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
            if self.head_bytes > cap:
                raise httptools.HttpParserError("request head over the size limit")


def http_protocol(parser: str) -> str:
    """The import path of the protocol class for `parser` (auto: httptools when installed, else h11)."""
    if parser not in ("auto", "h11", "httptools"):
        raise ConfigError(f"http={parser}: expected auto, h11 or httptools")
    if parser == "httptools" and HttpToolsProtocol is None:
        raise ConfigError("http=httptools: httptools is not installed (pip install httptools, or http=h11)")
    fast = parser != "h11" and HttpToolsProtocol is not None
    return f"{__name__}:{'HeaderDeadlineHttpTools' if fast else 'HeaderDeadlineH11'}"


def limits_from_config(cfg: DictConfig) -> Limits:
    return Limits(json_bytes=int(cfg.max_json_mb * (1 << 20)), npy_bytes=int(cfg.max_body_mb * (1 << 20)),
                  model_bytes=int(cfg.max_model_mb * (1 << 20)), batch_items=int(cfg.max_batch),
                  body_timeout_s=float(cfg.connections.body_timeout_s), parallel=int(cfg.parallel),
                  inline_bytes=int(cfg.inline_kb * 1024))


def app_settings(cfg: DictConfig) -> dict[str, Any]:
    """create_app's arguments from the config, as JSON-able values (workers receive them in the environment)."""
    workers = int(cfg.workers)
    threads = cfg.threads if cfg.threads is not None else (1 if workers > 1 else None)
    return {"models": str(cfg.models), "token": None if cfg.token is None else str(cfg.token), "threads": threads,
            "read_only": bool(cfg.read_only), "limits": dataclasses.asdict(limits_from_config(cfg))}


def app_from_environment() -> Any:
    """The app of one worker, built from the settings `serve` put in the environment (uvicorn's factory)."""
    from cmsdl.serve.app import create_app

    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    return create_app(**settings | {"limits": Limits(**settings["limits"])})


def check_workers(workers: int, read_only: bool) -> None:
    if workers < 1:
        raise ConfigError(f"workers={workers}: expected 1 or more")
    if workers > 1 and not read_only:
        raise ConfigError(f"workers={workers}: an upload or deletion would reach one worker only; use "
                          "read_only=true with several workers (and change models by restarting)")


@contextlib.contextmanager
def metrics_shared_between_workers() -> Iterator[None]:
    """Point prometheus-client's multiprocess mode at a fresh folder (removed afterwards), unless the environment
    names one."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="cmsdl-serve-metrics-") as folder:
        os.environ[MULTIPROCESS_DIR] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def serve(cfg: DictConfig) -> None:
    """Check the settings, then run the service (one process, or `workers` sharing the port) until interrupted."""
    from cmsdl.serve.app import create_app

    settings = app_settings(cfg)
    check_write_access(str(cfg.host), settings["token"], settings["read_only"])
    check_workers(int(cfg.workers), settings["read_only"])
    connections = cfg.connections
    uvicorn_settings = dict(host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=bool(cfg.access_log),
                            http=http_protocol(str(cfg.http)), limit_concurrency=connections.limit,
                            backlog=connections.backlog, timeout_keep_alive=connections.keep_alive_s,
                            h11_max_incomplete_event_size=int(connections.max_header_kb * 1024),
                            header_timeout_s=connections.header_timeout_s)
    if int(cfg.workers) == 1:
        app = create_app(**settings | {"limits": Limits(**settings["limits"])})
        uvicorn.Server(ServeConfig(app, **uvicorn_settings)).run()
        return
    os.environ[SETTINGS_VARIABLE] = json.dumps(settings)
    config = ServeConfig(f"{__name__}:app_from_environment", factory=True, workers=int(cfg.workers),
                         **uvicorn_settings)
    with metrics_shared_between_workers():
        Multiprocess(config, sockets=[config.bind_socket()]).run()
