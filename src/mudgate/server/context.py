"""What every connection's protocol object shares: the app, the limits and the socket table."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from uvicorn._types import ASGI3Application, WWWScope
from uvicorn.server import ServerState

from ..protocol import restart_reason
from ..settings import Settings
from .sockets import SocketTable

__all__ = ["ProtocolLimits", "ServerContext", "access_logger", "access_target", "split_target"]

access_logger = logging.getLogger("mudgate.access")


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """The limits the protocol layer enforces, built once from Settings."""

    request_timeout: float
    keep_alive_timeout: float
    max_request_head_bytes: int
    write_buffer_bytes: int
    max_message_bytes: int
    max_message_fragments: int
    ping_interval: float
    ping_timeout: float
    close_timeout: float
    control_frame_limit: int
    control_frame_window: float
    per_message_deflate: bool
    deflate_window_bits: int
    deflate_mem_level: int
    # What a WebSocket still open at uvicorn's shutdown is told (the hub's drain tells the
    # players the same): when to come back.
    restart_reason: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ProtocolLimits:
        return cls(
            request_timeout=settings.request_timeout,
            keep_alive_timeout=settings.keep_alive_timeout,
            max_request_head_bytes=settings.max_request_head_bytes,
            write_buffer_bytes=settings.write_buffer_bytes,
            max_message_bytes=settings.max_message_bytes,
            max_message_fragments=settings.max_message_fragments,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            # A close that cannot be written in the time one write may take never will be.
            close_timeout=settings.write_timeout,
            control_frame_limit=settings.control_frame_limit,
            control_frame_window=settings.control_frame_window,
            per_message_deflate=settings.ws_per_message_deflate,
            deflate_window_bits=settings.ws_deflate_window_bits,
            deflate_mem_level=settings.ws_deflate_mem_level,
            restart_reason=restart_reason(settings.reconnect_window),
        )


def split_target(root_path: str, target: bytes) -> tuple[str, bytes, bytes]:
    """A request target as ASGI's ``path``, ``raw_path`` and ``query_string`` under
    ``root_path``; ValueError if it is not a path (the absolute form a proxy sends is)."""
    if target.startswith((b"http://", b"https://")):
        target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
    elif not target.startswith(b"/") and target != b"*":
        raise ValueError("the request target must be a path")
    raw_path, _, query = target.partition(b"?")
    path = root_path + unquote(raw_path.decode("latin-1"))
    return path, root_path.encode("ascii") + raw_path, query


def access_target(scope: WWWScope) -> tuple[str, str]:
    """The client and the request target of ``scope``, as the access log writes them (tokens
    in the query are redacted by the log's formatter)."""
    client = scope["client"]
    query = scope["query_string"]
    target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
    return (f"{client[0]}:{client[1]}" if client else "-"), target


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Shared by every connection of one server."""

    app: ASGI3Application
    limits: ProtocolLimits
    sockets: SocketTable
    # uvicorn's: the connections its shutdown closes, the tasks it waits for, and the default
    # response headers it refreshes every second (the Date).
    state: ServerState
    app_state: dict[str, Any]
    root_path: str
    loop: asyncio.AbstractEventLoop

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.state.default_headers
