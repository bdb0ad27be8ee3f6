"""How `cmsdl serve` runs: the start-up checks on writes and tokens, and uvicorn with bounded connections.

A service that accepts uploads (PUT/DELETE) listens beyond loopback only with a token; an empty token is a
configuration error. uvicorn gets a connection limit (503 beyond it), a keep-alive timeout, a cap on header size,
and a deadline for each request's headers, so clients that open connections and never finish a request are
disconnected instead of holding sockets and file descriptors. Imports no torch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import h11
from omegaconf import DictConfig
from uvicorn.protocols.http.h11_impl import H11Protocol

from cmsdl.errors import ConfigError
from cmsdl.serve.bodies import Limits

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


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


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers: a connection that has not sent a complete
    request head `header_timeout_s` seconds after it opened (or after its last response) is closed."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self.loop.call_later(self.header_timeout_s, self._header_deadline, self.cycle)

    def _header_deadline(self, cycle_then: Any) -> None:
        """Close the connection if no new request head arrived since the deadline was armed."""
        if self.cycle is cycle_then and not self.transport.is_closing():
            if self.conn.our_state not in (h11.SEND_RESPONSE, h11.SEND_BODY):
                self.transport.close()


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": float(seconds)})


def limits_from_config(cfg: DictConfig) -> Limits:
    return Limits(json_bytes=int(cfg.max_json_mb * (1 << 20)), npy_bytes=int(cfg.max_body_mb * (1 << 20)),
                  model_bytes=int(cfg.max_model_mb * (1 << 20)), batch_items=int(cfg.max_batch),
                  body_timeout_s=float(cfg.connections.body_timeout_s), parallel=int(cfg.parallel))


def serve(cfg: DictConfig) -> None:
    """Check the settings, then run the service until interrupted."""
    import uvicorn

    from cmsdl.serve.app import create_app

    token = None if cfg.token is None else str(cfg.token)
    check_write_access(str(cfg.host), token, bool(cfg.read_only))
    app = create_app(cfg.models, token, cfg.threads, bool(cfg.read_only), limits_from_config(cfg))
    connections = cfg.connections
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                http=header_deadline_protocol(connections.header_timeout_s),
                limit_concurrency=connections.limit, backlog=connections.backlog,
                timeout_keep_alive=connections.keep_alive_s,
                h11_max_incomplete_event_size=int(connections.max_header_kb * 1024))
