"""The WebSocket opening handshake: what asks for it, what it negotiates, the ASGI scope it
becomes, and the HTTP responses that answer it (websocket.py drives them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11
from uvicorn._types import WebSocketScope
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from .context import access_logger, access_target, split_target

if TYPE_CHECKING:
    from websockets.extensions import ServerExtensionFactory

__all__ = [
    "Deflate",
    "accepted_response",
    "asgi_scope",
    "is_websocket_upgrade",
    "log_handshake",
    "negotiate",
    "offers_deflate",
    "plain_response",
]

RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Deflate:
    """The terms on which mudgate compresses: one window size both ways and the compressor's
    memLevel. zlib holds about 2**(bits+2) + 2**(memLevel+9) bytes to compress and 2**bits
    (plus ~7 KiB) to decompress: 31 KiB at 11 bits and memLevel 4, 301 KiB at zlib's
    defaults (15 and 8), measured with tracemalloc."""

    window_bits: int
    mem_level: int

    def factory(self) -> ServerPerMessageDeflateFactory:
        return ServerPerMessageDeflateFactory(
            server_max_window_bits=self.window_bits,
            client_max_window_bits=self.window_bits,
            # A client that does not offer client_max_window_bits may compress with a 32 KiB
            # window, which the server would have to hold to decompress: no compression.
            require_client_max_window_bits=True,
            compress_settings={"memLevel": self.mem_level},
        )


def is_websocket_upgrade(request: h11.Request) -> bool:
    """Whether ``request`` asks to switch to the WebSocket protocol."""
    upgrade = connection = False
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif name == b"connection":
            connection = b"upgrade" in (token.strip().lower() for token in value.split(b","))
    return upgrade and connection


def _headers(raw: RawHeaders) -> Headers:
    return Headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw])


def negotiate(
    request: h11.Request, *, deflate: Deflate | None, logger: logging.Logger
) -> tuple[ServerProtocol, Response, Headers]:
    """Check the upgrade request with websockets: the handshake, its response (101, or a 4xx
    saying what is wrong) and the request's headers. With ``deflate``, compression is
    accepted if the client offers it on those terms."""
    headers = _headers(request.headers)
    extensions: list[ServerExtensionFactory] = []
    if deflate is not None:
        extensions.append(deflate.factory())
    handshake = ServerProtocol(extensions=extensions, logger=logger)
    response = handshake.accept(Request(request.target.decode("latin-1"), headers))
    return handshake, response, headers


def offers_deflate(request: h11.Request) -> bool:
    """Whether the client asks for permessage-deflate."""
    return any(
        name == b"sec-websocket-extensions" and b"permessage-deflate" in value.lower()
        for name, value in request.headers
    )


def asgi_scope(
    request: h11.Request,
    headers: Headers,
    *,
    root_path: str,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    state: dict[str, Any],
    extensions: dict[str, Any],
) -> WebSocketScope:
    """The ASGI scope of the connection; ValueError for a target that cannot be one."""
    scope_path, raw_path, query = split_target(root_path, request.target)
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "server": server,
        "client": client,
        "root_path": root_path,
        "path": scope_path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": list(request.headers),
        "subprotocols": [
            token.strip()
            for value in headers.get_all("Sec-WebSocket-Protocol")
            for token in value.split(",")
        ],
        "state": state,
        "extensions": extensions,
    }


def accepted_response(response: Response, message: dict[str, Any]) -> bytes:
    """The 101 response, with the headers and subprotocol of the app's
    ``websocket.accept``."""
    for name, value in message.get("headers", ()):
        response.headers[name.decode("latin-1")] = value.decode("latin-1")
    subprotocol = message.get("subprotocol")
    if subprotocol:
        response.headers["Sec-WebSocket-Protocol"] = subprotocol
    return response.serialize()


def log_handshake(scope: WebSocketScope | None, outcome: str) -> None:
    """The access log's line for a handshake: accepted, or the status that refused it."""
    if scope is not None and access_logger.isEnabledFor(logging.INFO):
        access_logger.info('%s - "WebSocket %s" %s', *access_target(scope), outcome)


def plain_response(
    status: int, headers: RawHeaders, body: bytes, default_headers: RawHeaders
) -> bytes:
    """A plain HTTP response refusing the handshake; the connection closes after it."""
    response_headers = _headers(headers)
    response_headers.setdefault("Content-Length", str(len(body)))
    response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    response_headers.setdefault("Connection", "close")
    for name, value in default_headers:
        response_headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return Response(status, HTTPStatus(status).phrase, response_headers, body).serialize()
