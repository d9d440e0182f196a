"""WebSocket connections on the sans-I/O ``websockets.ServerProtocol``, served to ASGI apps.

``HTTPProtocol`` parses the upgrade request (so its size and deadline are already bounded)
and hands the transport over. Nothing is read until the app answers the handshake; after
that, one message at a time waits for the app, and nothing is read while the transport holds
more than ``write_buffer_bytes`` for a client that does not read: a client that sends pings
and never reads their pongs stalls itself, not the server. What a client sends is parsed
frame by frame only while the app waits for a message, and never past the first whole one,
which the app handles before anything more is parsed: a connection holds one message (its
bytes while it arrives, joined however many frames it comes in, at most
``max_message_fragments``; then its text) and one read. At most ``PARSE_BYTES`` are parsed
per turn of the event loop, so no connection holds it for long. Pings (and unsolicited
pongs) are rate-limited, the server pings every ``ping_interval``, and every close is
bounded in time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, cast

import h11
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, WebSocketScope
from uvicorn.protocols.utils import ClientDisconnected
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from ..bounded import LeakyBucket
from ..protocol import CloseCode
from ..transports import FRAMES_EXTENSION, FrameWriter
from .context import ServerContext
from .flow import APP, Flow
from .handshake import (
    Deflate,
    accepted_response,
    asgi_scope,
    log_handshake,
    negotiate,
    offers_deflate,
    plain_response,
)
from .inbox import ABNORMAL_CLOSURE, Fragments, Inbox
from .keepalive import Heartbeat
from .sockets import SocketEvent, SocketKind

__all__ = ["WebSocketProtocol"]

logger = logging.getLogger("mudgate.server")

# What is parsed in one turn of the event loop, at most: 4 KiB of the smallest frames (a
# 2-byte fragment is 8 bytes on the wire) is 512 frames, about 2 ms of websockets' parser on
# this project's machine. The rest waits, unread, for the next turn.
PARSE_BYTES = 4096

# The protocol layer's own close code (and ABNORMAL_CLOSURE, inbox.py's).
KEEPALIVE_TIMEOUT = 1011


def _frame_bytes(data: bytes, start: int) -> int | None:
    """The size on the wire of the frame that starts at ``start`` of ``data``, once its
    header has arrived (RFC 6455 section 5.2)."""
    available = len(data) - start
    if available < 2:
        return None
    second = data[start + 1]
    length, head = second & 0x7F, 2
    if length >= 126:
        head = 4 if length == 126 else 10
        if available < head:
            return None
        length = int.from_bytes(data[start + 2 : start + head], "big")
    return head + (4 if second & 0x80 else 0) + length


class State(enum.Enum):
    CONNECTING = "connecting"  # the app has not answered the handshake
    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent or received; the TCP connection remains
    CLOSED = "closed"


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection, from its handshake to the end of its TCP connection."""

    __slots__ = (
        "_client",
        "_context",
        "_control_frames",
        "_flow",
        "_fragments",
        "_frame_writer",
        "_handshake",
        "_heartbeat",
        "_http_response",
        "_inbox",
        "_parse_scheduled",
        "_protocol",
        "_response",
        "_scope",
        "_server",
        "_state",
        "_unparsed",
        "_unparsed_from",
        "_waiting",
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
        # What the client sent and was not parsed yet (from _unparsed_from on): at most one
        # read, as nothing more is read while it waits.
        self._unparsed = b""
        self._unparsed_from = 0
        self._parse_scheduled = False  # a _parse waits for the next turn of the loop
        self._waiting = False  # the app waits in receive(): the next message may be parsed
        self._inbox = Inbox(context.loop)
        limits = context.limits
        self._heartbeat = Heartbeat(context.loop, limits.ping_interval, limits.ping_timeout, self)
        # Made when first needed: most clients send no control frame and no fragmented one.
        self._control_frames: LeakyBucket | None = None
        self._fragments: Fragments | None = None
        self._frame_writer = FrameWriter(self, shareable=False)

    # The handshake

    def handshake(self, request: h11.Request, trailing: bytes) -> None:
        """Check the upgrade request and let the app answer it; until it does, nothing more
        is read."""
        context = self._context
        context.state.connections.add(self)  # type: ignore[arg-type]
        self._flow.pause(APP)
        self._unparsed = trailing
        handshake, response, headers = negotiate(
            request, deflate=self._deflate(request), logger=logger
        )
        if handshake.extensions:
            context.sockets.compress(self._flow.transport)
        if response.status_code != 101:
            # Not a valid WebSocket handshake: websockets says why, in a 4xx.
            context.sockets.count(SocketEvent.MALFORMED)
            self._flow.write(response.serialize())
            self._state = State.CLOSED
            self._flow.close()
            return
        try:
            self._scope = asgi_scope(
                request,
                headers,
                root_path=context.root_path,
                scheme="wss" if self._flow.transport.get_extra_info("sslcontext") else "ws",
                client=self._client,
                server=self._server,
                state=context.app_state.copy(),
                extensions={
                    "websocket.http.response": {},
                    FRAMES_EXTENSION: {"writer": self._frame_writer},
                },
            )
        except ValueError as error:
            context.sockets.count(SocketEvent.MALFORMED)
            self._refuse(400, [], f"{error}\n".encode())
            return
        self._handshake, self._response = handshake, response
        self._inbox.put({"type": "websocket.connect"})
        # The app answers at once; should it not, the handshake is under the request deadline.
        self._flow.arm(context.limits.request_timeout, self._handshake_timed_out)
        task = context.loop.create_task(self._run())
        context.state.tasks.add(task)
        task.add_done_callback(context.state.tasks.discard)

    def _deflate(self, request: h11.Request) -> Deflate | None:
        """The terms of compression, if it is on and the client may have it: past
        max_compressed_connections the handshake declines it and the player plays without."""
        limits = self._context.limits
        if not limits.per_message_deflate or not offers_deflate(request):
            return None
        if not self._context.sockets.may_compress():
            self._context.sockets.count(SocketEvent.COMPRESSION_DECLINED)
            return None
        return Deflate(limits.deflate_window_bits, limits.deflate_mem_level)

    def _accept(self, message: dict[str, Any]) -> None:
        handshake, response = self._handshake, self._response
        assert handshake is not None
        assert response is not None
        self._flow.write(accepted_response(response, message))
        protocol = ServerProtocol(
            state=OPEN, max_size=self._context.limits.max_message_bytes, logger=logger
        )
        protocol.extensions = handshake.extensions
        # No extension negotiated: the frames a broadcast built once are the wire's.
        self._frame_writer.shareable = not protocol.extensions
        self._protocol = protocol
        self._handshake = self._response = None
        self._state = State.OPEN
        self._flow.cancel_timer()
        self._context.sockets.mark(self._flow.transport, SocketKind.WEBSOCKET)
        log_handshake(self._scope, "accepted")
        self._heartbeat.start()
        self._parse()  # reading resumes, unless the client sent more with its handshake

    def _refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer the handshake with a plain HTTP response, and close."""
        self._context.sockets.uncompress(self._flow.transport)  # its slot, at once
        self._flow.write(plain_response(status, headers, body, self._context.default_headers))
        log_handshake(self._scope, str(status))
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
        self._unparsed = self._unparsed[self._unparsed_from :] + data
        self._unparsed_from = 0
        self._parse()

    @property
    def unparsed_bytes(self) -> int:
        """What the client sent that waits to be parsed."""
        return len(self._unparsed) - self._unparsed_from

    def _parse(self) -> None:
        """Parse what the client sent, one frame at a time, while the app waits for a
        message (or, once closing, for the client's close reply): at most PARSE_BYTES a turn
        of the event loop, and never past the first whole message. What is left waits,
        unread, for the app's next receive() or the loop's next turn; so a read of tiny
        frames is neither thousands of messages at once (a few bytes on the wire, hundreds
        in memory each) nor, compressed, as many inflated ones."""
        protocol = self._protocol
        if protocol is None:
            return
        data, start, budget = self._unparsed, self._unparsed_from, PARSE_BYTES
        while start < len(data) and budget > 0 and self._wants_frames():
            # Fed up to the end of the next frame, websockets gives back at most that frame.
            size = min(_frame_bytes(data, start) or len(data), len(data) - start, budget)
            protocol.receive_data(data[start : start + size])
            start, budget = start + size, budget - size
            for frame in protocol.events_received():
                assert isinstance(frame, Frame)
                self._frame(frame)
            if self._state is State.OPEN and protocol.state is not OPEN:
                # websockets closed it (a frame too big, a protocol error): tell the app.
                self._state = State.CLOSING
                self._fragments = None
                sent = protocol.close_sent
                self._disconnected(sent.code if sent else ABNORMAL_CLOSURE)
        self._unparsed_from = start  # an offset: slicing at each message would copy the rest
        self._flush()
        if self._state is State.CLOSED or start == len(data):
            # All parsed, or the closing handshake is over and nothing more is read for.
            self._unparsed, self._unparsed_from = b"", 0
        if not self._unparsed:
            # Read on: one read may wait here while the app handles its message, and once
            # closing, the client's close reply must get in.
            if self._state is State.CLOSING or (self._state is State.OPEN and not self._inbox):
                self._flow.resume(APP)
            return
        self._flow.pause(APP)
        if self._wants_frames() and not self._parse_scheduled:
            self._parse_scheduled = True
            self._context.loop.call_soon(self._parse_later)

    def _parse_later(self) -> None:
        self._parse_scheduled = False
        self._parse()

    def _wants_frames(self) -> bool:
        """Whether to parse on: the app waits with nothing for it yet, or the connection is
        closing and only the client's close reply matters."""
        if self._state is State.OPEN:
            return self._waiting and not self._inbox
        return self._state is State.CLOSING

    def eof_received(self) -> None:
        # The client closed its side: so does the server (asyncio closes the transport).
        if self._state is State.OPEN:
            self._state = State.CLOSING
            self._disconnected(ABNORMAL_CLOSURE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._flow.lost()
        self._context.state.connections.discard(self)
        self._heartbeat.stop()
        self._state = State.CLOSED
        self._disconnected(ABNORMAL_CLOSURE)
        self._protocol = self._handshake = None
        self._fragments = None
        self._unparsed, self._unparsed_from = b"", 0
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
            self._send_close(CloseCode.SERVICE_RESTART, self._context.limits.restart_reason)

    # Frames from the client

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode is Opcode.TEXT, bytes(frame.data))  # a whole message (no copy)
            else:
                self._fragments = Fragments(frame)
        elif opcode is Opcode.CONT:
            self._fragment(frame)
        elif opcode is Opcode.PING:
            self._control_frame()  # websockets has queued the pong
        elif opcode is Opcode.PONG:
            if not self._heartbeat.answered(bytes(frame.data)):
                self._control_frame()
        elif opcode is Opcode.CLOSE:
            # websockets has queued the reply (and, as the server, the end of the stream).
            received = self._protocol.close_rcvd if self._protocol else None
            if self._state is State.OPEN:
                self._state = State.CLOSING
            self._disconnected(
                received.code if received else ABNORMAL_CLOSURE, received.reason if received else ""
            )

    def _fragment(self, frame: Frame) -> None:
        """A continuation frame (websockets has checked that a message is in progress)."""
        fragments = self._fragments
        if fragments is None:
            return  # the message was dropped: the connection is closing
        fragments.add(frame)
        if fragments.frames > self._context.limits.max_message_fragments:
            # Empty continuation frames cost nothing on the wire but CPU here: count them all.
            self._fragments = None
            if self._state is State.OPEN:
                self._context.sockets.count(SocketEvent.FRAGMENT_FLOOD)
                self._fail(CloseCode.POLICY_VIOLATION, "message in too many frames")
        elif frame.fin:
            self._fragments = None
            self._message(fragments.text, fragments.payload)

    def _message(self, text: bool, data: bytes | bytearray) -> None:
        if self._state is not State.OPEN:
            return  # past our close: only the client's close reply matters now
        message: ASGIReceiveEvent
        if text:
            try:
                message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8")
                return
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        self._flow.pause(APP)  # the next waits until the app takes this one
        self._inbox.put(message)

    def _control_frame(self) -> None:
        """A ping or an unsolicited pong: past control_frame_limit per window, 1008."""
        limits = self._context.limits
        bucket = self._control_frames = self._control_frames or LeakyBucket()
        now = self._context.loop.time()
        if (
            not bucket.hit(now, limits.control_frame_limit, limits.control_frame_window)
            and self._state is State.OPEN
        ):
            self._context.sockets.count(SocketEvent.CONTROL_FLOOD)
            self._fail(CloseCode.POLICY_VIOLATION, "too many control frames")

    # Keepalive (what the Heartbeat calls)

    def send_ping(self, payload: bytes) -> bool:
        if self._state is not State.OPEN or self._protocol is None:
            return False
        self._protocol.send_ping(payload)
        self._flush()
        return True

    def ping_timed_out(self) -> None:
        if self._state is State.OPEN:
            self._fail(KEEPALIVE_TIMEOUT, "keepalive ping timeout")

    # Closing

    def _fail(self, code: int, reason: str) -> None:
        """Close at once on the server's initiative, telling the client and the app why
        (websockets writes the close frame and ends the stream)."""
        assert self._protocol is not None
        self._state = State.CLOSING
        self._heartbeat.stop()
        self._protocol.fail(code, reason)
        self._disconnected(code, reason)
        self._flush()

    def _send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the client's reply (or close_timeout) ends it."""
        assert self._protocol is not None
        self._state = State.CLOSING
        self._heartbeat.stop()
        self._protocol.send_close(code, reason)
        self._disconnected(code, reason)
        self._flush()
        # Read again (once what is unparsed is), so the reply can arrive; what else comes is
        # discarded.
        self._parse()
        self._flow.arm(self._context.limits.close_timeout, self._flow.abort)

    def _disconnected(self, code: int, reason: str = "") -> None:
        """Tell the app, once, that the connection is over (if it has been told of it)."""
        if self._scope is not None:
            self._inbox.close(code, reason)

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

    def write_frame(self, frame: bytes) -> bool:
        """FrameWriter.write: False unless the frame can go on the wire now, as it is."""
        if (
            self._state is not State.OPEN
            or not self._frame_writer.shareable
            or self._flow.write_paused
        ):
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
        if not self._inbox and self._state is not State.CONNECTING:
            # The app is done with its last message: the next may be parsed.
            self._waiting = True
            self._parse()
        try:
            return await self._inbox.get()
        finally:
            self._waiting = False

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
