"""The real-time endpoints ``/ws`` (WebSocket) and ``/events`` (SSE), as raw ASGI handlers.

They run before FastAPI's router: an idle connection then holds only what it needs (DESIGN.md
section 9). Each handler's own task runs the connection's receive loop, so a vanished peer is
noticed even when it never sends, and every handler leaves through ``Hub.disconnect`` in a
``finally``. How a message reaches the client is the transport's (mudgate/transports.py).
A client that offers a MUD client's subprotocol (``gmcp.mudstandards.org``) speaks it
instead of mudgate's JSON (subprotocols.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import Authenticator, Credentials, TokenError
from ..commands import CommandRegistry, answer_error
from ..connection import Connection, ConnectionLimits, ConnectionState
from ..hub import Hub, Refusal
from ..protocol import CloseCode, CommandError, ErrorCode, error_body
from ..render import Renderers
from ..settings import Settings
from ..transports import (
    FRAMES_EXTENSION,
    ASGIWebSocketTransport,
    FrameTransport,
    FrameWriter,
    MudClientTransport,
    SSETransport,
    Transport,
)
from . import subprotocols
from .clients import remote_address
from .subprotocols import MudClients, MudClientSession

__all__ = ["RealtimeEndpoints"]

logger = logging.getLogger("mudgate.realtime")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx buffers responses by default, which would hold events back.
    (b"x-accel-buffering", b"no"),
]


def _query_parameter(scope: Scope, wanted: bytes) -> str | None:
    """The value of the query parameter spelled exactly ``wanted`` (the first), if any."""
    query_string: bytes = scope.get("query_string", b"")
    for parameter in query_string.split(b"&"):
        name, _, value = parameter.partition(b"=")
        if name == wanted:
            return unquote_plus(value.decode("latin-1"))
    return None


def _resume_of(scope: Scope) -> str | None:
    """Where the client was (docs/protocol.md, "Resume"): ``?resume=`` on a WebSocket, the
    ``Last-Event-ID`` header (or ``?last_event_id=``) on an SSE stream."""
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id":
            return str(value.decode("latin-1"))
    return _query_parameter(scope, b"resume") or _query_parameter(scope, b"last_event_id")


def _query_token(scope: Scope) -> str | None:
    """The token from ``?token=`` (what browsers can send) or an Authorization bearer header.

    Only a parameter spelled exactly ``token`` counts: ``%74oken`` is not one (and so not
    redacted from logs by a rule that looks for ``token=``).
    """
    token = _query_parameter(scope, b"token")
    if token is not None:
        return token or None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


def _frame_writer(scope: Scope) -> FrameWriter | None:
    """The FrameWriter mudgate's server offers, if nothing (such as compression) makes each
    connection's frames its own."""
    extension = scope.get("extensions", {}).get(FRAMES_EXTENSION)
    writer = None if extension is None else extension.get("writer")
    return writer if isinstance(writer, FrameWriter) and writer.shareable else None


def _websocket_transport(
    scope: Scope, send: Send, session: MudClientSession | None = None
) -> Transport:
    """Prebuilt frames straight to the socket where mudgate's server offers its FrameWriter;
    ASGI messages otherwise. A MUD client reads its session's view of each event."""
    writer = _frame_writer(scope)
    if session is not None:
        return MudClientTransport(session.view, send, writer)
    if writer is not None:
        return FrameTransport(writer, send)
    return ASGIWebSocketTransport(send)


def _refusal_status(refusal: Refusal) -> int:
    return 429 if refusal.code is CloseCode.RATE_LIMITED else 503


class RealtimeEndpoints:
    """The ``/ws`` and ``/events`` handlers, which the app calls before its own middleware."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Callable[[], float],
        hub: Hub,
        commands: CommandRegistry,
        authenticator: Authenticator,
        renderers: Renderers,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.limits = ConnectionLimits.from_settings(settings)
        self.hub = hub
        self.commands = commands
        self.authenticator = authenticator
        self.mud_clients = MudClients(
            hub=hub,
            commands=commands,
            renderers=renderers,
            max_message_bytes=settings.max_message_bytes,
        )

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
        remote = remote_address(scope)
        refusal = self.hub.admit(identity.player_id, remote)
        subprotocol = subprotocols.choose(scope.get("subprotocols", ()))
        if subprotocol is None:
            await send({"type": "websocket.accept"})
        else:
            # Chosen even to be refused: a browser that offered subprotocols fails a
            # handshake that selects none, and would never see the close code.
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
        if refusal is not None:
            # Accepted only to be closed: a browser sees a close code, never an HTTP status.
            await send(
                {"type": "websocket.close", "code": int(refusal.code), "reason": refusal.reason}
            )
            return
        session = None if subprotocol is None else self.mud_clients.session(subprotocol)
        conn = Connection(
            identity.player_id,
            remote,
            self.limits,
            transport=_websocket_transport(scope, send, session),
            handler=asyncio.current_task(),
            clock=self.clock,
        )
        if session is None:
            await self._serve(conn, self._receive_frames(conn, receive), _resume_of(scope))
        else:
            await self._serve(conn, session.receive_frames(conn, receive), _resume_of(scope))

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

    async def _receive_frames(self, conn: Connection, receive: Receive) -> tuple[int, str] | None:
        """Serve the client's frames until it is gone; how the WebSocket ended."""
        max_chars = self.settings.max_message_bytes
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":  # websocket.disconnect
                return int(message.get("code", 1005)), str(message.get("reason") or "")
            if conn.state is not ConnectionState.OPEN:
                continue
            conn.received()
            text = message.get("text")
            error: CommandError | None
            if text is None:
                error = CommandError(ErrorCode.BAD_FRAME, "send JSON in text frames")
            elif len(text) > max_chars:
                # mudgate's server enforces it below ASGI; this covers other ASGI servers.
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                continue
            else:
                error = await self.commands.dispatch(self.hub, conn, text)
            if error is not None:
                answer_error(conn, error)
            # receive() does not yield while frames are queued: let the writers this frame
            # woke up run, or one fast sender fills everyone's outbox before it is drained.
            await asyncio.sleep(0)

    async def _serve(
        self,
        conn: Connection,
        receiving: Coroutine[Any, Any, tuple[int, str] | None],
        resume: str | None,
    ) -> None:
        """Run ``conn``'s receive loop in its hub session, which always ends by removing it
        from every structure (``Hub.disconnect``); ``resume`` is where the client was."""
        try:
            async with self.hub.session(conn, resume):
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
        remote = remote_address(scope)
        refusal = self.hub.admit(identity.player_id, remote)
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
        transport = SSETransport(
            send, self.settings.ping_interval, self.settings.max_subscriptions_per_player
        )
        conn = Connection(
            identity.player_id,
            remote,
            self.limits,
            transport=transport,
            handler=asyncio.current_task(),
            clock=self.clock,
        )
        transport.start_keepalive(conn)
        await self._serve(conn, _until_disconnect(receive), _resume_of(scope))


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
