"""The WebSocket protocol against a fake transport: what it holds while the app is busy."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import h11
from uvicorn.server import ServerState

from mudgate.protocol import Outgoing
from mudgate.server.context import ProtocolLimits, ServerContext
from mudgate.server.flow import Flow
from mudgate.server.sockets import SocketTable
from mudgate.server.websocket import PARSE_BYTES, WebSocketProtocol
from mudgate.transports import FRAMES_EXTENSION, FrameWriter

from ..conftest import make_settings
from ..hostile.floods import BINARY, CONTINUATION, TEXT, frame


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def tiny_frame() -> bytes:
    """A masked one-byte text frame: 7 bytes on the wire."""
    mask = os.urandom(4)
    return struct.pack("!BB", 0x81, 0x81) + mask + bytes([ord("x") ^ mask[0]])


def open_websocket(
    app: Any, transport: FakeTransport, *, deflate: bool = False, **settings: Any
) -> WebSocketProtocol:
    """A WebSocketProtocol on ``transport`` whose upgrade request was just handed over."""
    loop = asyncio.get_running_loop()
    sockets = SocketTable(10, compressed_capacity=10)
    sockets.open(transport)  # type: ignore[arg-type]
    context = ServerContext(
        app=app,
        limits=ProtocolLimits.from_settings(make_settings(**settings)),
        sockets=sockets,
        state=ServerState(),
        app_state={},
        root_path="",
        loop=loop,
    )
    flow = Flow(transport, sockets, loop, close_timeout=10)  # type: ignore[arg-type]
    websocket = WebSocketProtocol(context, flow, ("127.0.0.1", 1), ("127.0.0.1", 2))
    key = base64.b64encode(os.urandom(16))
    headers = [
        ("Host", "x"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if deflate:
        headers.append(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"))
    websocket.handshake(h11.Request(method="GET", target="/ws", headers=headers), b"")
    return websocket


async def test_a_read_of_tiny_frames_waits_unparsed_while_the_app_is_busy() -> None:
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.Event().wait()  # busy: it never takes a message

    transport = FakeTransport()
    websocket = open_websocket(app, transport)
    await accepted.wait()
    burst = tiny_frame() * 40_000  # 280 KB: 40,000 messages if parsed at once
    websocket.data_received(burst)
    # Nothing parsed while the app does not ask: the bytes wait, and nothing more is read.
    assert len(websocket._inbox) == 0
    assert websocket.unparsed_bytes == len(burst)
    assert not transport.reading
    # The app takes them all, one at a time (none waits behind the one it handles), in order.
    for _ in range(40_000):
        assert await websocket.receive() == {"type": "websocket.receive", "text": "x"}
        assert len(websocket._inbox) == 0
        assert not transport.reading
    # Reading resumes once the app asks for more than there was.
    asking = asyncio.ensure_future(websocket.receive())
    await asyncio.sleep(0)
    assert transport.reading
    asking.cancel()
    websocket.connection_lost(None)


async def accepted_writer(
    transport: FakeTransport, *, deflate: bool = False
) -> tuple[WebSocketProtocol, FrameWriter]:
    """An open WebSocket whose app holds it open, and the frame writer its scope offers."""
    scopes: list[Any] = []
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.Event().wait()

    websocket = open_websocket(app, transport, deflate=deflate, ws_per_message_deflate=deflate)
    await accepted.wait()
    return websocket, scopes[0]["extensions"][FRAMES_EXTENSION]["writer"]


async def test_the_frame_writer_writes_a_prebuilt_frame_at_once() -> None:
    transport = FakeTransport()
    websocket, writer = await accepted_writer(transport)
    handshake_response = len(transport.written)
    message = Outgoing("say", b'{"text":"hi"}')
    assert writer.write(message.frame)
    assert bytes(transport.written[handshake_response:]) == message.frame
    websocket.connection_lost(None)


async def test_the_frame_writer_refuses_while_the_transport_is_over_its_high_water_mark() -> None:
    transport = FakeTransport()
    websocket, writer = await accepted_writer(transport)
    websocket.pause_writing()
    assert not writer.write(b"\x81\x00")
    waiting = asyncio.ensure_future(writer.writable())
    await asyncio.sleep(0)
    assert not waiting.done()
    websocket.resume_writing()
    await waiting
    assert writer.write(b"\x81\x00")
    websocket.connection_lost(None)
    assert not writer.write(b"\x81\x00")  # gone: the caller falls back to ASGI, which says so


async def test_the_frame_writer_refuses_a_connection_that_negotiated_compression() -> None:
    transport = FakeTransport()
    websocket, writer = await accepted_writer(transport, deflate=True)
    assert b"permessage-deflate" in transport.written
    assert not writer.write(b"\x81\x00")  # every recipient's frame is its own
    websocket.connection_lost(None)


def masked_frame(opcode: int, payload: bytes, *, fin: bool) -> bytes:
    """A client frame (masked, as clients must), final or not."""
    mask = os.urandom(4)
    head = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_fragmented_messages_reach_the_app_whole() -> None:
    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while len(received) < 3:
            received.append(await receive())
        done.set()
        await asyncio.Event().wait()

    transport = FakeTransport()
    websocket = open_websocket(app, transport)
    await asyncio.sleep(0)
    websocket.data_received(
        masked_frame(0x1, b"hel", fin=False)  # text, in three frames
        + masked_frame(0x9, b"", fin=True)  # a ping between fragments, as RFC 6455 allows
        + masked_frame(0x0, b"lo ", fin=False)
        + masked_frame(0x0, "wörld".encode(), fin=True)
        + masked_frame(0x2, b"\x00\x01", fin=False)  # binary, in two
        + masked_frame(0x0, b"\x02", fin=True)
        + masked_frame(0x1, b"whole", fin=True)  # and one in a single frame
    )
    await asyncio.wait_for(done.wait(), 5)
    assert received == [
        {"type": "websocket.receive", "text": "hello wörld"},
        {"type": "websocket.receive", "bytes": b"\x00\x01\x02"},
        {"type": "websocket.receive", "text": "whole"},
    ]
    assert websocket._fragments is None  # nothing kept between messages


async def open_app_waiting(transport: FakeTransport, **settings: Any) -> WebSocketProtocol:
    """An open WebSocket whose app has not asked for a message yet."""
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        accepted.set()
        await asyncio.Event().wait()

    websocket = open_websocket(app, transport, **settings)
    await accepted.wait()
    return websocket


async def test_a_message_in_tiny_fragments_is_parsed_a_slice_per_turn_of_the_loop() -> None:
    transport = FakeTransport()
    websocket = await open_app_waiting(transport, max_message_fragments=100_000)
    fragments = frame(CONTINUATION, b"aa", fin=False) * 8192  # 64 KiB of 2-byte fragments
    websocket.data_received(frame(TEXT, b"[", fin=False) + fragments)
    receiving = asyncio.ensure_future(websocket.receive())
    await asyncio.sleep(0)
    # One slice parsed; the rest waits, unread, for the next turns of the loop.
    assert websocket.unparsed_bytes > len(fragments) - PARSE_BYTES
    assert not transport.reading
    turns = 0
    while websocket.unparsed_bytes:
        await asyncio.sleep(0)
        turns += 1
    assert turns >= len(fragments) // PARSE_BYTES
    assert transport.reading  # all parsed, and no message for the app yet: read on
    # Joined as they came: one buffer of the payload's bytes, not an object per fragment.
    assert websocket._fragments is not None
    assert len(websocket._fragments.payload) == 1 + 2 * 8192
    websocket.data_received(frame(CONTINUATION, b"]"))
    assert await receiving == {
        "type": "websocket.receive",
        "text": "[" + "a" * 16384 + "]",
    }
    websocket.connection_lost(None)


async def test_a_message_in_more_frames_than_allowed_closes_the_connection_with_1008() -> None:
    transport = FakeTransport()
    websocket = await open_app_waiting(transport, max_message_fragments=4)
    websocket.data_received(
        frame(BINARY, b"a", fin=False) + frame(CONTINUATION, b"", fin=False) * 4
    )
    assert await websocket.receive() == {
        "type": "websocket.disconnect",
        "code": 1008,
        "reason": "message in too many frames",
    }
    assert struct.pack("!H", 1008) + b"message in too many frames" in transport.written
    assert websocket._fragments is None  # what it sent is let go at once
    websocket.connection_lost(None)


async def test_a_fragmented_binary_message_arrives_as_bytes() -> None:
    transport = FakeTransport()
    websocket = await open_app_waiting(transport)
    websocket.data_received(frame(BINARY, b"\x00\x01", fin=False) + frame(CONTINUATION, b"\x02"))
    assert await websocket.receive() == {"type": "websocket.receive", "bytes": b"\x00\x01\x02"}
    websocket.connection_lost(None)


async def test_a_websocket_still_open_at_shutdown_is_told_when_to_come_back() -> None:
    transport = FakeTransport()
    websocket, _ = await accepted_writer(transport)
    handshake_end = transport.written.index(b"\r\n\r\n") + 4
    websocket.shutdown()  # uvicorn's, after the hub's drain: one the hub did not hold
    reason = b"server restarting; reconnect within 5 s"
    close = bytes([0x88, 2 + len(reason)]) + struct.pack("!H", 1012) + reason
    assert bytes(transport.written[handshake_end:]) == close
    websocket.connection_lost(None)
