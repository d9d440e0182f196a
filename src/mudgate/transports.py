"""How a connection reaches its client: one small class per transport, behind ``Transport``.

A ``Connection`` (connection.py) owns the outbox, the writer task and the close; it writes
through its transport and never knows which one it is. Each transport has one way to write:

- ``FrameTransport``: a WebSocket under mudgate's own server, which writes the frame a
  broadcast built once (``Outgoing.frame``) straight to the socket through the protocol
  layer's ``FrameWriter``: no task, no ASGI message, no framing per recipient.
- ``ASGIWebSocketTransport``: a WebSocket under any other ASGI server, or one whose frames
  cannot be shared (permessage-deflate compresses each connection's frames on its own).
- ``MudClientTransport``: a WebSocket in a MUD client's subprotocol (``gmcp.mudstandards.org``
  and the like, docs/protocol.md), which writes each event as the frames of the connection's
  view of it (its text, its GMCP), built once per view for everyone who gets it.
- ``SSETransport``: a Server-Sent-Events stream, with its keep-alive comment.
- ``TelnetTransport``: a classic MUD client over telnet, which writes each event as text
  (and GMCP) through mudgate's telnet protocol (``mudgate.server.telnet``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, Protocol

from .protocol import CloseCode, Outgoing, websocket_messages

__all__ = [
    "FRAMES_EXTENSION",
    "ASGIWebSocketTransport",
    "FrameSink",
    "FrameTransport",
    "FrameWriter",
    "KeptAlive",
    "MudClientTransport",
    "SSETransport",
    "Send",
    "TelnetSink",
    "TelnetTransport",
    "Transport",
]

# ASGI's send callable, spelled here so that nothing below the web layer imports Starlette.
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# The scope extension through which mudgate's server offers a WebSocket's FrameWriter.
FRAMES_EXTENSION = "mudgate.frames"


class Transport(Protocol):
    """What a connection asks of the way to its client."""

    name: ClassVar[str]  # "websocket", "sse", "telnet": the operators' name, in monitoring

    def write_now(self, message: Outgoing) -> bool:
        """Write ``message`` at once if that needs neither waiting nor a buffer growing past
        its high-water mark; False to have it queued for the connection's writer."""
        ...

    async def write(self, message: Outgoing) -> None:
        """Write one message, waiting while the client is not reading; raises OSError (or
        RuntimeError) once the client is gone."""
        ...

    async def write_close(self, code: CloseCode, reason: str) -> None:
        """Tell the client the connection is over, and end it."""
        ...

    def release(self) -> None:
        """The connection is gone: stop anything the transport runs on its own."""
        ...


class FrameSink(Protocol):
    """What mudgate's WebSocket protocol offers its FrameWriter."""

    def write_frame(self, frame: bytes) -> bool: ...
    async def writable(self) -> None: ...


class FrameWriter:
    """A WebSocket's way to the socket beside ASGI, offered by mudgate's server in
    ``scope["extensions"]["mudgate.frames"]["writer"]``.

    ``write`` puts a frame the caller built on the transport at once. It refuses (False)
    unless the connection is open and its transport below the high-water mark; the caller
    then awaits ``writable`` and tries again, so a client that does not read still holds at
    most one write buffer. ``shareable`` says whether frames built once for many recipients
    may be written as they are (not when an extension such as permessage-deflate was
    negotiated). The server detaches the writer when the socket is lost.
    """

    __slots__ = ("_sink", "shareable")

    def __init__(self, sink: FrameSink, *, shareable: bool = True) -> None:
        self._sink: FrameSink | None = sink
        self.shareable = shareable

    def write(self, frame: bytes) -> bool:
        sink = self._sink
        return sink is not None and sink.write_frame(frame)

    async def writable(self) -> None:
        """Wait until the transport is below its high-water mark (or gone)."""
        sink = self._sink
        if sink is not None:
            await sink.writable()

    def detach(self) -> None:
        self._sink = None


class FrameTransport:
    """A WebSocket under mudgate's own server: prebuilt frames, written straight away."""

    name: ClassVar[str] = "websocket"

    __slots__ = ("_frames", "_send")

    def __init__(self, frames: FrameWriter, send: Send) -> None:
        self._frames = frames
        self._send = send

    def write_now(self, message: Outgoing) -> bool:
        return self._frames.write(message.frame)

    async def write(self, message: Outgoing) -> None:
        frames = self._frames
        await frames.writable()
        if not frames.write(message.frame):
            raise ConnectionResetError("the WebSocket is closing")

    async def write_close(self, code: CloseCode, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": int(code), "reason": reason})

    def release(self) -> None:
        pass


class ASGIWebSocketTransport:
    """A WebSocket spoken through ASGI messages, one ``websocket.send`` per message."""

    name: ClassVar[str] = "websocket"

    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    def write_now(self, message: Outgoing) -> bool:
        return False

    async def write(self, message: Outgoing) -> None:
        await self._send({"type": "websocket.send", "text": message.text})

    async def write_close(self, code: CloseCode, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": int(code), "reason": reason})

    def release(self) -> None:
        pass


class MudClientTransport:
    """A WebSocket in a MUD client's subprotocol: each message written as ``view`` frames it
    for this connection (``Outgoing.view``: built once per view, shared by every recipient),
    straight to the socket through ``frames`` when given (mudgate's server, frames
    shareable), else one ASGI ``websocket.send`` a frame. A message whose view is empty
    (nothing to show, no GMCP the client takes) is not written at all."""

    name: ClassVar[str] = "websocket"

    __slots__ = ("_frames", "_send", "_view")

    def __init__(
        self, view: Callable[[Outgoing], bytes], send: Send, frames: FrameWriter | None = None
    ) -> None:
        self._view = view
        self._send = send
        self._frames = frames

    def write_now(self, message: Outgoing) -> bool:
        frames = self._frames
        if frames is None:
            return False
        data = self._view(message)
        return not data or frames.write(data)

    async def write(self, message: Outgoing) -> None:
        data = self._view(message)
        frames = self._frames
        if frames is None:
            for text, payload in websocket_messages(data):
                if text:
                    await self._send({"type": "websocket.send", "text": payload.decode()})
                else:
                    await self._send({"type": "websocket.send", "bytes": payload})
        elif data:
            await frames.writable()
            if not frames.write(data):
                raise ConnectionResetError("the WebSocket is closing")

    async def write_close(self, code: CloseCode, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": int(code), "reason": reason})

    def release(self) -> None:
        pass


class KeptAlive(Protocol):
    """What an SSE stream's keep-alive asks of its connection."""

    @property
    def outbox_messages(self) -> int: ...
    def send(self, message: Outgoing) -> bool: ...


class SSETransport:
    """A Server-Sent-Events stream: each message one ``data:`` record; a comment every
    ``keepalive_interval`` seconds keeps proxies from closing an idle stream, and makes a
    write to a peer that vanished fail, which ends the stream.

    A room's or channel's event goes with an ``id:``: the stream's resume string (where it is
    in its room and each channel it heard, at most ``max_channels`` of those), which the
    browser sends back as ``Last-Event-ID`` when it reconnects."""

    name: ClassVar[str] = "sse"

    KEEPALIVE = Outgoing.sse_comment("keep-alive")

    # One timer and no closure per stream: an idle connection holds only these slots (the
    # positions only once it has heard a room or a channel).
    __slots__ = (
        "_connection",
        "_keepalive",
        "_keepalive_interval",
        "_max_channels",
        "_positions",
        "_send",
    )

    def __init__(self, send: Send, keepalive_interval: float, max_channels: int = 32) -> None:
        self._send = send
        self._keepalive_interval = keepalive_interval
        self._keepalive: asyncio.TimerHandle | None = None
        self._connection: KeptAlive | None = None
        self._max_channels = max_channels
        # Topic -> "TOPIC:OFFSET:EPOCH": the room first, then channels least recently heard first.
        self._positions: dict[str, str] | None = None

    def start_keepalive(self, connection: KeptAlive) -> None:
        """Every interval, send ``connection`` the keep-alive comment unless something is
        queued for it anyway; it stops once the connection no longer takes messages."""
        self._connection = connection
        self._schedule()

    def _schedule(self) -> None:
        self._keepalive = asyncio.get_running_loop().call_later(
            self._keepalive_interval, self._tick
        )

    def _tick(self) -> None:
        connection = self._connection
        if connection is None:
            return
        if connection.outbox_messages or connection.send(self.KEEPALIVE):
            self._schedule()

    def write_now(self, message: Outgoing) -> bool:
        return False

    async def write(self, message: Outgoing) -> None:
        body = message.sse
        if message.topic is not None:  # a room's or channel's event, or where the client is
            body = b"id: " + self._moved_on(message).encode() + b"\n" + body
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    def _moved_on(self, message: Outgoing) -> str:
        """The stream's resume string once it has ``message`` (a room's or channel's)."""
        topic = message.topic
        assert topic is not None
        positions = self._positions
        if positions is None:
            positions = self._positions = {}
        entry = f"{topic}:{message.offset}:{message.epoch}"
        if message.event == "unsubscribed":
            positions.pop(topic, None)
        elif message.event == "subscribed" and topic in positions:
            pass  # joined again: where it was heard up to still stands
        elif topic.startswith("room:"):
            # A player hears one room at a time: the room of the latest room event is theirs.
            room = next((key for key in positions if key.startswith("room:")), None)
            if room is not None and room != topic:
                del positions[room]
            positions[topic] = entry
        else:
            positions.pop(topic, None)
            positions[topic] = entry
            channels = [key for key in positions if not key.startswith("room:")]
            for key in channels[: max(0, len(channels) - self._max_channels)]:
                del positions[key]
        return ",".join(positions.values())

    async def write_close(self, code: CloseCode, reason: str) -> None:
        record = Outgoing.close_record(code, reason)
        await self._send({"type": "http.response.body", "body": record.sse, "more_body": False})

    def release(self) -> None:
        self._connection = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None


class TelnetSink(Protocol):
    """What mudgate's telnet protocol offers its transport: it renders each event for its
    client (text, colour, GMCP, compression) and writes it."""

    def write_event(self, message: Outgoing) -> bool: ...
    async def writable(self) -> None: ...
    def write_farewell(self, code: CloseCode, reason: str) -> None: ...
    def release(self) -> None: ...


class TelnetTransport:
    """A telnet client: each message rendered as text by the telnet protocol, at once while
    its write buffer is below the high-water mark."""

    name: ClassVar[str] = "telnet"

    __slots__ = ("_sink",)

    def __init__(self, sink: TelnetSink) -> None:
        self._sink = sink

    def write_now(self, message: Outgoing) -> bool:
        return self._sink.write_event(message)

    async def write(self, message: Outgoing) -> None:
        sink = self._sink
        await sink.writable()
        if not sink.write_event(message):
            raise ConnectionResetError("the telnet connection is closing")

    async def write_close(self, code: CloseCode, reason: str) -> None:
        self._sink.write_farewell(code, reason)

    def release(self) -> None:
        self._sink.release()
