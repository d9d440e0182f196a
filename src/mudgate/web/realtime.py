"""The real-time transports: ``/ws`` (WebSocket), ``/events`` (SSE) and ``POST /commands``.

``/ws`` and ``/events`` are plain ASGI handlers that run before FastAPI's router: an idle
connection then holds only what it needs (DESIGN.md section 9). Each handler's own task runs
the connection's receive loop, so a vanished peer is noticed even when it never sends, and
every handler leaves through ``Hub.disconnect`` in a ``finally``.
"""

# No `from __future__ import annotations`: FastAPI resolves the route's dependencies at runtime.
import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import Authenticator, Credentials, Identity, TokenError
from ..commands import CommandRegistry
from ..connection import Connection, ConnectionState
from ..hub import Hub, Refusal
from ..protocol import CloseCode, ErrorCode, Outgoing, ProtocolError, encode_error
from ..server.frames import FRAMES_EXTENSION, FrameWriter
from .errors import APIError, error_body

__all__ = ["RealtimeTransports", "SSEConnection", "WebSocketConnection", "realtime_router"]

logger = logging.getLogger("mudgate.realtime")

# Errors that mean the client sent something malformed (counted towards 1008), as opposed to
# a well-formed command that failed (a player not online, a channel not subscribed).
BAD_FRAME_CODES = frozenset(
    {ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP, ErrorCode.INVALID_ARGS}
)
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx buffers responses by default, which would hold events back.
    (b"x-accel-buffering", b"no"),
]
SSE_KEEPALIVE = Outgoing.sse_comment("keep-alive")
PLAY_PAGE = Path(__file__).parent / "static" / "play.html"
CLIENT_MODULE = Path(__file__).parent / "static" / "mudgate.js"


class WebSocketConnection(Connection):
    """A WebSocket player. Under mudgate's own server, messages go out as prebuilt frames
    through its FrameWriter (the same bytes for every recipient); under another ASGI server,
    as ASGI text messages."""

    transport = "websocket"

    __slots__ = ("_frames", "_send")

    def __init__(
        self, send: Send, *args: Any, frames: FrameWriter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._send = send
        self._frames = frames

    def _write_now(self, message: Outgoing) -> bool:
        return self._frames is not None and self._frames.write(message.frame)

    async def _write(self, message: Outgoing) -> None:
        frames = self._frames
        if frames is not None:
            await frames.writable()
            if frames.write(message.frame):
                return
        # No fast path, or the connection is closing: ASGI says what became of it.
        await self._send({"type": "websocket.send", "text": message.text})

    async def _write_close(self, code: CloseCode, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": int(code), "reason": reason})


class SSEConnection(Connection):
    transport = "sse"

    __slots__ = ("_keepalive", "_keepalive_interval", "_send")

    def __init__(self, send: Send, *args: Any, keepalive_interval: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send = send
        self._keepalive_interval = keepalive_interval
        self._keepalive: asyncio.TimerHandle | None = None

    def start_keepalive(self) -> None:
        """Write a comment every interval: proxies keep the stream open, and a write to a peer
        that vanished fails, which ends the stream."""
        self._keepalive = asyncio.get_running_loop().call_later(
            self._keepalive_interval, self._send_keepalive
        )

    def _send_keepalive(self) -> None:
        if self.state is ConnectionState.OPEN:
            if not self.outbox_messages:
                self.send(SSE_KEEPALIVE)
            self.start_keepalive()

    def release(self) -> None:
        super().release()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    async def _write(self, message: Outgoing) -> None:
        await self._send({"type": "http.response.body", "body": message.sse, "more_body": True})

    async def _write_close(self, code: CloseCode, reason: str) -> None:
        record = Outgoing.close_record(code, reason)
        await self._send({"type": "http.response.body", "body": record.sse, "more_body": False})


def _query_token(scope: Scope) -> str | None:
    """The token from ``?token=`` (what browsers can send) or an Authorization bearer header.

    Only a parameter spelled exactly ``token`` counts: ``%74oken`` is not one (and so not
    redacted from logs by a rule that looks for ``token=``).
    """
    query_string: bytes = scope.get("query_string", b"")
    for parameter in query_string.split(b"&"):
        name, _, value = parameter.partition(b"=")
        if name == b"token":
            return unquote_plus(value.decode("latin-1")) or None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def _frame_writer(scope: Scope) -> FrameWriter | None:
    """mudgate's server offers its fast path for frames; other ASGI servers do not."""
    extension = scope.get("extensions", {}).get(FRAMES_EXTENSION)
    writer = None if extension is None else extension.get("writer")
    return writer if isinstance(writer, FrameWriter) else None


def _remote(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _refusal_status(refusal: Refusal) -> int:
    return 429 if refusal.code is CloseCode.RATE_LIMITED else 503


class RealtimeTransports:
    """The ``/ws`` and ``/events`` handlers, which the app calls before its own middleware."""

    def __init__(
        self, *, hub: Hub, commands: CommandRegistry, authenticator: Authenticator
    ) -> None:
        self.hub = hub
        self.commands = commands
        self.authenticator = authenticator

    def route(self, scope: Scope) -> ASGIApp | None:
        """The handler for ``scope`` if it is one of the real-time paths, else None."""
        path: str = scope.get("path", "")
        # Mounted under a prefix, the path still starts with the root path (ASGI spec).
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        if scope["type"] == "websocket" and path == "/ws":
            return self._websocket
        if scope["type"] == "http" and path == "/events":
            return self._events
        return None

    def _credentials(self, scope: Scope) -> Credentials:
        """What the client presented: its token, and (only for a game's hook, which may
        want them) its cookies and headers."""
        token = _query_token(scope)
        if not self.authenticator.asks_game:
            return Credentials(token)
        headers = Headers(scope=scope)
        return Credentials(token, cookie_parser(headers.get("cookie", "")), headers)

    # WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            identity = await self.authenticator.identify(self._credentials(scope))
        except TokenError as error:
            # Refused at the handshake: an unauthenticated client is never a player.
            await self._deny_handshake(scope, send, 401, ErrorCode.UNAUTHORIZED, str(error))
            return
        remote = _remote(scope)
        refusal = self.hub.admit(identity.player_id, remote)
        await send({"type": "websocket.accept"})
        if refusal is not None:
            # Accepted only to be closed: a browser sees a close code, never an HTTP status.
            await send(
                {"type": "websocket.close", "code": int(refusal.code), "reason": refusal.reason}
            )
            return
        conn = WebSocketConnection(
            send,
            identity.player_id,
            remote,
            self.hub.limits,
            handler=asyncio.current_task(),
            clock=self.hub.clock,
            frames=_frame_writer(scope),
        )
        await self._serve(conn, self._receive_frames(conn, receive))

    async def _deny_handshake(
        self, scope: Scope, send: Send, status: int, code: ErrorCode, message: str
    ) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": error_body(code, message)})
        else:  # the server answers 403
            await send({"type": "websocket.close", "code": int(CloseCode.UNAUTHORIZED)})

    async def _receive_frames(
        self, conn: WebSocketConnection, receive: Receive
    ) -> tuple[int, str] | None:
        """Serve the client's frames until it is gone; how the WebSocket ended."""
        max_chars = self.hub.settings.max_message_bytes
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":  # websocket.disconnect
                return int(message.get("code", 1005)), str(message.get("reason") or "")
            if conn.state is not ConnectionState.OPEN:
                continue
            conn.received()
            text = message.get("text")
            error: ProtocolError | None
            if text is None:
                error = ProtocolError(ErrorCode.BAD_FRAME, "send JSON in text frames")
            elif len(text) > max_chars:
                # mudgate's server enforces it below ASGI; this covers other ASGI servers.
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                continue
            else:
                error = await self.commands.dispatch(self.hub, conn, text)
            if error is not None:
                self._answer_error(conn, error)
            # receive() does not yield while frames are queued: let the writers this frame
            # woke up run, or one fast sender fills everyone's outbox before it is drained.
            await asyncio.sleep(0)

    def _answer_error(self, conn: Connection, error: ProtocolError) -> None:
        if error.code in BAD_FRAME_CODES and not conn.bad_frame():
            conn.close(CloseCode.POLICY_VIOLATION, "too many bad frames")
            return
        conn.send(encode_error(error.code, error.message, error.request_id, error.retry_after))

    async def _serve(
        self, conn: Connection, receiving: Coroutine[Any, Any, tuple[int, str] | None]
    ) -> None:
        """Run ``conn``'s receive loop in its hub session, which always ends by removing it
        from every structure (``Hub.disconnect``)."""
        try:
            async with self.hub.session(conn):
                conn.peer_close = await receiving
        except asyncio.CancelledError:
            # Only the cancellation that Connection.abort asked for ends the handler quietly.
            task = asyncio.current_task()
            if not conn.aborted or task is None:
                raise
            task.uncancel()

    # Server-Sent Events

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _send_error(send, 405, ErrorCode.BAD_FRAME, "use GET", {"allow": "GET"})
            return
        try:
            identity = await self.authenticator.identify(self._credentials(scope))
        except TokenError as error:
            await _send_error(
                send, 401, ErrorCode.UNAUTHORIZED, str(error), {"www-authenticate": "Bearer"}
            )
            return
        refusal = self.hub.admit(identity.player_id, _remote(scope))
        if refusal is not None:
            await _send_error(
                send,
                _refusal_status(refusal),
                ErrorCode.RATE_LIMITED
                if refusal.code is CloseCode.RATE_LIMITED
                else ErrorCode.UNAVAILABLE,
                refusal.reason,
                {"retry-after": str(refusal.retry_after_seconds)},
            )
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        # Tell EventSource how soon to reconnect after the stream ends.
        await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
        conn = SSEConnection(
            send,
            identity.player_id,
            _remote(scope),
            self.hub.limits,
            handler=asyncio.current_task(),
            clock=self.hub.clock,
            keepalive_interval=self.hub.settings.ping_interval,
        )
        conn.start_keepalive()
        await self._serve(conn, _until_disconnect(receive))


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the (empty) request body


async def _send_error(
    send: Send, status: int, code: ErrorCode, message: str, headers: dict[str, str]
) -> None:
    body = error_body(code, message)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(name.encode(), value.encode()) for name, value in headers.items()]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})


# POST /commands reads its body itself (to cap it before parsing), so FastAPI cannot infer it.
COMMAND_BODY = {
    "required": True,
    "description": "One protocol frame (docs/protocol.md), at most MUDGATE_MAX_MESSAGE_BYTES.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["op"],
                "properties": {
                    "op": {"type": "string", "maxLength": 64},
                    "id": {"oneOf": [{"type": "string", "maxLength": 64}, {"type": "integer"}]},
                },
                "additionalProperties": True,
            },
            "example": {"op": "say", "text": "hello", "id": 1},
        }
    },
}


class CommandAccepted(BaseModel):
    status: str = "accepted"


def realtime_router(hub: Hub, commands: CommandRegistry, authenticator: Authenticator) -> APIRouter:
    """``POST /commands`` (how an SSE client sends a frame; replies arrive on its stream) and
    ``GET /play``, the page that plays over ``/ws`` or ``/events``."""
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False, description="A player token.")

    async def identify(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Identity:
        presented = Credentials(
            credentials.credentials if credentials else None,
            request.cookies,
            request.headers,
        )
        try:
            return await authenticator.identify(presented)
        except TokenError as error:
            raise APIError(401, ErrorCode.UNAUTHORIZED, str(error)) from None

    @router.post(
        "/commands",
        status_code=202,
        response_model=CommandAccepted,
        summary="Send a command frame as an SSE client",
        responses={400: {}, 401: {}, 409: {}, 413: {}, 429: {}, 500: {}},
        openapi_extra={"requestBody": COMMAND_BODY},
    )
    async def post_command(
        request: Request, identity: Annotated[Identity, Depends(identify)]
    ) -> CommandAccepted:
        """The body is one protocol frame, e.g. ``{"op": "say", "text": "hi"}``; what it causes
        arrives as events on the player's open ``/events`` (or ``/ws``) connection."""
        player_id = identity.player_id
        own = hub.registry.player_connections.get(player_id)
        if not own:
            raise APIError(409, ErrorCode.NOT_CONNECTED, "open /events before sending commands")
        conn = own[-1]  # taken now: the list may change while the body arrives
        remote = _remote(request.scope)
        if not hub.begin_command(player_id, remote):
            raise APIError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many commands under way at once from this player or address: "
                "wait for their answers",
                retry_after=1,
            )
        try:
            body = await _read_body(request, hub.settings.max_message_bytes)
            conn.received()
            error = await commands.dispatch(hub, conn, body)
        finally:
            hub.end_command(player_id, remote)
        if error is not None:
            if error.code in BAD_FRAME_CODES and not conn.bad_frame():
                conn.close(CloseCode.POLICY_VIOLATION, "too many bad frames")
            raise APIError.of(error)
        return CommandAccepted()

    @router.get("/play", response_class=HTMLResponse, tags=["play"])
    async def play() -> HTMLResponse:
        """The play page: a guest (or ``?token=``) in the game over WebSocket, falling back to
        SSE and ``POST /commands``; reconnects as the close code says."""
        return HTMLResponse(PLAY_PAGE.read_text(encoding="utf-8"))

    @router.get("/mudgate.js", response_class=Response, tags=["play"])
    async def client_module() -> Response:
        """The browser client as an ES module (``import { MudgateClient } from
        "<gateway>/mudgate.js"``): reconnects by close code, renews refused tokens, falls back
        to SSE. /play is built on it."""
        return Response(
            CLIENT_MODULE.read_bytes(),
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    return router


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) to hold more than ``limit`` bytes of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, ErrorCode.FRAME_TOO_BIG, f"frames are at most {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, ErrorCode.FRAME_TOO_BIG, f"frames are at most {limit} bytes")
    except ClientDisconnect:
        # Gone before its body was whole (a slow body's author, say): nobody reads an answer,
        # and an attacker who does it on purpose must not fill the log with tracebacks.
        raise APIError(
            400, ErrorCode.BAD_REQUEST, "the client left before its body arrived"
        ) from None
    return bytes(body)
