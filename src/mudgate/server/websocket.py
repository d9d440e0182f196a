"""WebSocket connections on the sans-I/O ``websockets.ServerProtocol``, served to ASGI apps.

``HTTPProtocol`` parses the upgrade request (so its size and deadline are already bounded)
and hands the transport over. Nothing is read until the app answers the handshake; after
that, one message at a time waits for the app, and nothing is read while the transport holds
more than ``write_buffer_bytes`` for a client that does not read: a client that sends pings
and never reads their pongs stalls itself, not the server. Pings (and unsolicited pongs) are
rate-limited, the server pings every ``ping_interval``, and every close is bounded in time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, WebSocketScope
from uvicorn.protocols.utils import ClientDisconnected
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from ..bounded import leak
from ..protocol import CloseCode
from ..sockets import SocketEvent, SocketKind
from .context import ServerContext, access_logger, access_target, split_target
from .flow import APP, Flow

if TYPE_CHECKING:
    from websockets.extensions import ServerExtensionFactory

__all__ = ["FRAMES_EXTENSION", "FrameWriter", "WebSocketProtocol", "is_websocket_upgrade"]

logger = logging.getLogger("mudgate.server")

# What is fed to the parser at once: a read of tiny frames becomes at most a few hundred
# messages before the app must take them.
PARSE_BYTES = 4096

# The scope extension through which mudgate's app writes prebuilt frames (FrameWriter).
FRAMES_EXTENSION = "mudgate.frames"

# Close codes of the protocol layer's own making.
KEEPALIVE_TIMEOUT = 1011
ABNORMAL_CLOSURE = 1006


def is_websocket_upgrade(request: h11.Request) -> bool:
    """Whether ``request`` asks to switch to the WebSocket protocol."""
    upgrade = connection = False
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif name == b"connection":
            connection = b"upgrade" in (token.strip().lower() for token in value.split(b","))
    return upgrade and connection


class State(enum.Enum):
    CONNECTING = "connecting"  # the app has not answered the handshake
    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent or received; the TCP connection remains
    CLOSED = "closed"


class FrameWriter:
    """A WebSocket's fast path beside ASGI, for mudgate's own app:
    ``scope["extensions"]["mudgate.frames"]["writer"]``.

    ``write`` puts a frame the caller built (the same bytes for every recipient of a
    broadcast) on the transport at once: no task, no ASGI message, no framing per recipient.
    It refuses (False) unless the connection is open with no extension negotiated and its
    transport is below the high-water mark; the caller then queues, awaits ``writable`` and
    tries again, so a client that does not read still holds at most one write buffer.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self._protocol: WebSocketProtocol | None = protocol

    def write(self, frame: bytes) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.write_frame(frame)

    async def writable(self) -> None:
        """Wait until the transport is below its high-water mark (or gone)."""
        protocol = self._protocol
        if protocol is not None:
            await protocol.writable()

    def detach(self) -> None:
        self._protocol = None


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection, from its handshake to the end of its TCP connection."""

    __slots__ = (
        "_client",
        "_context",
        "_control_at",
        "_control_level",
        "_disconnect_sent",
        "_flow",
        "_fragments",
        "_frame_writer",
        "_frames_shareable",
        "_handshake",
        "_http_response",
        "_inbox",
        "_keepalive",
        "_ping_payload",
        "_protocol",
        "_response",
        "_scope",
        "_server",
        "_state",
        "_text",
        "_unparsed",
        "_waiter",
    )

    def __init__(
        self,
        context: ServerContext,
        flow: Flow,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
    ) -> None:
        self._context = context
        self._flow = flow
        self._client = client
        self._server = server
        self._state = State.CONNECTING
        self._handshake: ServerProtocol | None = None
        self._response: Response | None = None
        self._http_response: tuple[int, list[tuple[bytes, bytes]], list[bytes]] | None = None
        self._protocol: ServerProtocol | None = None
        self._scope: WebSocketScope | None = None
        # What the client sent and was not parsed yet: at most one read, as nothing more is
        # read while it waits.
        self._unparsed = b""
        self._inbox: deque[ASGIReceiveEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._disconnect_sent = False
        self._keepalive: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._control_level = 0.0
        self._control_at = 0.0
        self._fragments: list[bytes] = []
        self._text = True
        self._frame_writer = FrameWriter(self)
        self._frames_shareable = False  # no extension negotiated: plain frames are the wire

    # The handshake

    def handshake(self, request: h11.Request, trailing: bytes) -> None:
        """Check the upgrade request and let the app answer it; until it does, nothing more
        is read."""
        context = self._context
        context.state.connections.add(self)  # type: ignore[arg-type]
        self._flow.pause(APP)
        self._unparsed = trailing
        path = request.target.decode("latin-1")
        headers = Headers(
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers]
        )
        extensions: list[ServerExtensionFactory] = []
        if context.limits.per_message_deflate:
            extensions.append(
                ServerPerMessageDeflateFactory(
                    server_max_window_bits=12,
                    client_max_window_bits=12,
                    compress_settings={"memLevel": 5},
                )
            )
        handshake = ServerProtocol(extensions=extensions, logger=logger)
        response = handshake.accept(Request(path, headers))
        if response.status_code != 101:
            # Not a valid WebSocket handshake: websockets says why, in a 4xx.
            context.sockets.count(SocketEvent.MALFORMED)
            self._flow.write(response.serialize())
            self._state = State.CLOSED
            self._flow.close()
            return
        root_path = context.root_path
        try:
            scope_path, raw_path, query = split_target(root_path, request.target)
        except ValueError as error:
            context.sockets.count(SocketEvent.MALFORMED)
            self._refuse(400, [], f"{error}\n".encode())
            return
        self._handshake, self._response = handshake, response
        self._scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self._scheme(),
            "server": self._server,
            "client": self._client,
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
            "state": context.app_state.copy(),
            "extensions": {
                "websocket.http.response": {},
                FRAMES_EXTENSION: {"writer": self._frame_writer},
            },
        }
        self._inbox.append({"type": "websocket.connect"})
        # The app answers at once; should it not, the handshake is under the request deadline.
        self._flow.arm(context.limits.request_timeout, self._handshake_timed_out)
        task = context.loop.create_task(self._run())
        context.state.tasks.add(task)
        task.add_done_callback(context.state.tasks.discard)

    def _scheme(self) -> str:
        return "wss" if self._flow.transport.get_extra_info("sslcontext") else "ws"

    def _accept(self, message: dict[str, Any]) -> None:
        handshake, response = self._handshake, self._response
        assert handshake is not None
        assert response is not None
        for name, value in message.get("headers", ()):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        self._flow.write(response.serialize())
        protocol = ServerProtocol(
            state=OPEN, max_size=self._context.limits.max_message_bytes, logger=logger
        )
        protocol.extensions = handshake.extensions
        self._frames_shareable = not protocol.extensions
        self._protocol = protocol
        self._handshake = self._response = None
        self._state = State.OPEN
        self._flow.cancel_timer()
        self._context.sockets.mark(self._flow.transport, SocketKind.WEBSOCKET)
        self._log("accepted")
        self._schedule_ping()
        self._parse()  # what the client sent with its handshake
        if not self._inbox and not self._unparsed:
            self._flow.resume(APP)

    def _refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the handshake with a plain HTTP response, and close."""
        response_headers = Headers(
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        )
        response_headers.setdefault("Content-Length", str(len(body)))
        response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        response_headers.setdefault("Connection", "close")
        for name, value in self._context.default_headers:
            response_headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._flow.write(
            Response(status, HTTPStatus(status).phrase, response_headers, body).serialize()
        )
        self._log(str(status))
        self._handshake = self._response = None
        self._state = State.CLOSED
        self._disconnected(ABNORMAL_CLOSURE)
        self._flow.close()

    def _handshake_timed_out(self) -> None:
        self._context.sockets.count(SocketEvent.TIMED_OUT)
        self._refuse(503, [], b"the handshake was not answered in time\n")

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._flow.closing:
            self._flow.linger(data)
            return
        if self._state is State.CLOSING:
            # Waiting for the client's close reply: what comes before it is dropped, and
            # there is a limit to how much of it the server reads.
            self._flow.linger(data)
            if self._flow.transport.is_closing():
                return
        self._unparsed += data
        self._parse()

    def _parse(self) -> None:
        """Parse what the client sent, PARSE_BYTES at a time, while no message waits for the
        app. A read of tiny frames would otherwise become thousands of messages at once (a
        few bytes on the wire, hundreds in memory each); this way the bytes wait unparsed,
        and unread, until the app takes what was parsed."""
        protocol = self._protocol
        while (
            protocol is not None
            and self._unparsed
            and (not self._inbox or self._state is not State.OPEN)
        ):
            chunk = self._unparsed[:PARSE_BYTES]
            self._unparsed = self._unparsed[PARSE_BYTES:]
            protocol.receive_data(chunk)
            for frame in protocol.events_received():
                assert isinstance(frame, Frame)
                self._frame(frame)
            if self._state is State.OPEN and protocol.state is not OPEN:
                # websockets closed it (a frame too big, a protocol error): tell the app.
                self._state = State.CLOSING
                sent = protocol.close_sent
                self._disconnected(sent.code if sent else ABNORMAL_CLOSURE)
            self._flush()
        if self._unparsed:
            self._flow.pause(APP)

    def eof_received(self) -> None:
        # The client closed its side: so does the server (asyncio closes the transport).
        if self._state is State.OPEN:
            self._state = State.CLOSING
            self._disconnected(ABNORMAL_CLOSURE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._flow.lost()
        self._context.state.connections.discard(self)
        self._stop_keepalive()
        self._state = State.CLOSED
        self._disconnected(ABNORMAL_CLOSURE)
        self._protocol = self._handshake = None
        self._frame_writer.detach()  # the scope it sits in outlives the connection

    def pause_writing(self) -> None:
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self._flow.resume_writing()

    # uvicorn's shutdown

    def shutdown(self) -> None:
        if self._state is State.CONNECTING:
            self._refuse(503, [], b"the server is shutting down\n")
        elif self._state is State.OPEN:
            self._send_close(CloseCode.SERVICE_RESTART, "")

    # Frames from the client

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._text = opcode is Opcode.TEXT
            self._fragments = [bytes(frame.data)]
            if frame.fin:
                self._message()
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                self._message()
        elif opcode is Opcode.PING:
            self._control_frame()  # websockets has queued the pong
        elif opcode is Opcode.PONG:
            if self._ping_payload is not None and frame.data == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
            else:
                self._control_frame()
        elif opcode is Opcode.CLOSE:
            # websockets has queued the reply (and, as the server, the end of the stream).
            received = self._protocol.close_rcvd if self._protocol else None
            if self._state is State.OPEN:
                self._state = State.CLOSING
            self._disconnected(
                received.code if received else ABNORMAL_CLOSURE, received.reason if received else ""
            )

    def _message(self) -> None:
        data = self._fragments[0] if len(self._fragments) == 1 else b"".join(self._fragments)
        self._fragments = []
        if self._state is not State.OPEN:
            return  # past our close: only the client's close reply matters now
        message: ASGIReceiveEvent
        if self._text:
            try:
                message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8")
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self._inbox.append(message)
        self._flow.pause(APP)  # the next waits until the app takes this one
        self._wake()

    def _control_frame(self) -> None:
        """A leaky bucket: control_frame_limit per control_frame_window, then 1008."""
        limits = self._context.limits
        now = self._context.loop.time()
        self._control_level = leak(
            self._control_level,
            now - self._control_at,
            limits.control_frame_limit,
            limits.control_frame_window,
        )
        self._control_at = now
        if self._control_level > limits.control_frame_limit and self._state is State.OPEN:
            self._context.sockets.count(SocketEvent.CONTROL_FLOOD)
            self._fail(CloseCode.POLICY_VIOLATION, "too many control frames")

    # Keepalive

    def _schedule_ping(self) -> None:
        self._stop_keepalive()
        self._keepalive = self._context.loop.call_later(
            self._context.limits.ping_interval, self._ping
        )

    def _ping(self) -> None:
        self._keepalive = None
        if self._state is not State.OPEN or self._protocol is None:
            return
        self._ping_payload = os.urandom(4)
        self._protocol.send_ping(self._ping_payload)
        self._flush()
        self._keepalive = self._context.loop.call_later(
            self._context.limits.ping_timeout, self._keepalive_timed_out
        )

    def _keepalive_timed_out(self) -> None:
        self._keepalive = None
        if self._state is State.OPEN:
            self._fail(KEEPALIVE_TIMEOUT, "keepalive ping timeout")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    # Closing

    def _fail(self, code: int, reason: str) -> None:
        """Close at once on the server's initiative, telling the client and the app why
        (websockets writes the close frame and ends the stream)."""
        assert self._protocol is not None
        self._state = State.CLOSING
        self._stop_keepalive()
        self._protocol.fail(code, reason)
        self._disconnected(code, reason)
        self._flush()

    def _send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the client's reply (or close_timeout) ends it."""
        assert self._protocol is not None
        self._state = State.CLOSING
        self._stop_keepalive()
        self._protocol.send_close(code, reason)
        self._disconnected(code, reason)
        self._flush()
        # Read again, so the reply can arrive; what else comes is discarded.
        self._flow.resume(APP)
        self._flow.arm(self._context.limits.close_timeout, self._flow.abort)

    def _disconnected(self, code: int, reason: str = "") -> None:
        """Tell the app, once, that the connection is over."""
        if self._disconnect_sent or self._scope is None:
            return
        self._disconnect_sent = True
        self._inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._wake()

    # Writing

    def _flush(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        data = protocol.data_to_send()
        if not data:
            return
        self._flow.write(b"".join(data))
        if data[-1] == b"":  # websockets' end of the stream: the closing handshake is over
            self._state = State.CLOSED
            self._flow.close()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def write_frame(self, frame: bytes) -> bool:
        """FrameWriter.write: False unless the frame can go on the wire now, as it is."""
        if self._state is not State.OPEN or not self._frames_shareable or self._flow.write_paused:
            return False
        self._flow.write(frame)
        return True

    async def writable(self) -> None:
        if self._flow.write_paused:
            await self._flow.drain()

    # ASGI

    async def _run(self) -> None:
        assert self._scope is not None
        try:
            await self._context.app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            self._flow.abort()  # shutdown's last resort
            raise
        except Exception:
            logger.exception("error in the app", extra={"path": self._scope["path"]})
            self._end(CloseCode.INTERNAL_ERROR)
        else:
            if self._state is State.CONNECTING:
                logger.error("the app returned without answering the WebSocket handshake")
            self._end(CloseCode.NORMAL)

    def _end(self, code: int) -> None:
        """The app is done with the connection: finish it on its behalf."""
        if self._state is State.CONNECTING:
            if self._http_response is None:
                self._refuse(500, [], b"the server failed\n")
            else:
                self._flow.abort()  # a response was started and not finished
        elif self._state is State.OPEN:
            self._send_close(code, "")

    async def receive(self) -> ASGIReceiveEvent:
        while not self._inbox:
            if self._disconnect_sent:
                # Told once already; a receive after that does not hang.
                return {"type": "websocket.disconnect", "code": ABNORMAL_CLOSURE, "reason": ""}
            if self._waiter is None:
                self._waiter = self._context.loop.create_future()
            await self._waiter
        message = self._inbox.popleft()
        if not self._inbox and self._state is not State.CONNECTING:
            self._parse()
            if not self._inbox and not self._unparsed:
                self._flow.resume(APP)
        return message

    async def send(self, message: ASGISendEvent) -> None:
        if self._flow.write_paused:
            await self._flow.drain()
        if self._state is State.CONNECTING:
            self._answer_handshake(cast(dict[str, Any], message))
        elif self._state is State.OPEN:
            self._send_open(cast(dict[str, Any], message))
        else:
            raise ClientDisconnected()

    def _answer_handshake(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._refuse(403, [], b"")
        elif kind == "websocket.http.response.start" and self._http_response is None:
            self._http_response = (message["status"], list(message.get("headers", ())), [])
        elif kind == "websocket.http.response.body" and self._http_response is not None:
            status, headers, body = self._http_response
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._refuse(status, headers, b"".join(body))
        else:
            raise RuntimeError(f"unexpected {kind!r} during the WebSocket handshake")

    def _send_open(self, message: dict[str, Any]) -> None:
        assert self._protocol is not None
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                self._protocol.send_text(text.encode())
            else:
                self._protocol.send_binary(message.get("bytes") or b"")
            self._flush()
        elif kind == "websocket.close":
            self._send_close(message.get("code") or CloseCode.NORMAL, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected {kind!r} on an open WebSocket")

    def _log(self, outcome: str) -> None:
        if self._scope is None or not access_logger.isEnabledFor(logging.INFO):
            return
        access_logger.info('%s - "WebSocket %s" %s', *access_target(self._scope), outcome)
