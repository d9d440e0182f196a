"""Below ASGI, over WebSockets: ping floods from clients that never read, handshakes with
headers too large to hold. Each against a real ``mudgate serve``."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .gateway import Gateway, Healthy, connection, poll, read_all


def handshake(port: int, token: str, *, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
        + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )  # fmt: skip


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask theirs)."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


def open_stalled(port: int, token: str) -> socket.socket:
    """A WebSocket that completes its handshake and never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake(port, token))
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing past the handshake
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_ping_flood_from_a_client_that_never_reads_costs_nothing(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()
    ping = masked(0x9, b"ping") * 1000

    def flood() -> int:
        """Pings for 3 s, never reading a pong; how many went before the server stopped it."""
        with open_stalled(server.port, server.token("flooder")) as sock:
            sock.settimeout(0.1)
            sent = 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sock.sendall(ping)
                    sent += 1000
                except TimeoutError:
                    pass
                except OSError:
                    break  # closed by the server
            return sent

    async with Healthy(server) as healthy:
        await asyncio.to_thread(flood)
        await poll(lambda: server.memory()["connections"]["active_websockets"] == 1)
    healthy.assert_served()
    assert server.sockets()["control_flood"] == 1
    assert server.rss_mb() - before < 10


async def test_a_ping_flood_is_closed_with_1008(gateway: Callable[..., Gateway]) -> None:
    server = gateway(control_frame_limit=5)
    async with connect(server.ws("pinger"), ping_interval=None) as ws:
        for _ in range(10):
            await ws.ping()
        async with asyncio.timeout(5):
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
        assert ws.close_code == 1008
        assert ws.close_reason == "too many control frames"


async def test_an_upgrade_with_huge_headers_is_answered_431_and_closed(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()

    def upgrade() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            request = handshake(server.port, server.token("big"))
            sock.sendall(request[:-2] + b"X-Big: ")
            try:
                for _ in range(64):  # 4 MiB of one header, unless stopped first
                    sock.sendall(b"b" * 65536)
            except OSError:
                pass
            sock.settimeout(10)
            return sock.recv(65536)

    async with Healthy(server) as healthy:
        answers = await asyncio.gather(*(asyncio.to_thread(upgrade) for _ in range(20)))
    healthy.assert_served()
    assert {answer.split(b"\r\n")[0] for answer in answers} == {
        b"HTTP/1.1 431 Request Header Fields Too Large"
    }
    assert server.rss_mb() - before < 10


async def test_a_browser_with_a_large_cookie_is_told_so(gateway: Callable[..., Gateway]) -> None:
    server = gateway(max_request_head_bytes=8192)
    cookie = {"Cookie": "session=" + "c" * 10000}
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(10):
            await connect(server.ws("alice"), additional_headers=cookie)
    assert refused.value.response.status_code == 431


async def test_an_invalid_handshake_is_answered_400(gateway: Callable[..., Gateway]) -> None:
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Sec-WebSocket-Key" in answer
    assert server.sockets()["malformed"] == 1
