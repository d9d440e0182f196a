"""Real clients for the end-to-end tests: websockets, httpx streaming, and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol


class Player:
    """A WebSocket player that reads everything the server sends, as a real client does."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, **options: Any) -> Player:
        return cls(await connect(url, **options))

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.inbox.put_nowait(json.loads(message))
        except ConnectionClosed:
            pass

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, *names: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event (or error) named one of ``names``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                name = message.get("event") if message["type"] == "event" else message["type"]
                if name in names:
                    return message

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the connection; its close code."""
        async with asyncio.timeout(timeout):
            await self._reader
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def __aenter__(self) -> Player:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class MudClient:
    """A web MUD client on a mudstandards.org subprotocol: what the server writes, as text
    (BINARY frames) and GMCP messages (TEXT frames), read as a real client reads it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.text: asyncio.Queue[str] = asyncio.Queue()
        self.gmcp: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, subprotocol: str = "gmcp.mudstandards.org", **options: Any
    ) -> MudClient:
        return cls(await connect(url, subprotocols=[Subprotocol(subprotocol)], **options))

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.text.put_nowait(message.decode())
                else:
                    package, _, data = message.partition(" ")
                    self.gmcp.put_nowait((package, json.loads(data) if data else None))
        except ConnectionClosed:
            pass

    async def type(self, line: str | bytes) -> None:
        """Send a typed line (or several, or raw bytes) in a BINARY frame."""
        await self.ws.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")

    async def send_gmcp(self, package: str, data: Any = None) -> None:
        await self.ws.send(package if data is None else f"{package} {json.dumps(data)}")

    async def next_text(self, containing: str, timeout: float = 5.0) -> str:
        """The next text the server wrote that contains ``containing``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                text = await self.text.get()
                if containing in text:
                    return text

    async def next_gmcp(self, *packages: str, timeout: float = 5.0) -> tuple[str, Any]:
        """The next GMCP message of one of ``packages``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                package, data = await self.gmcp.get()
                if package in packages:
                    return package, data

    async def closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self._reader
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def __aenter__(self) -> MudClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def raw_websocket(port: int, token: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads: a stalled peer."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: read nothing past the handshake
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the TCP connection."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def reset(sock: socket.socket) -> None:
    """Drop the connection with a TCP reset, as a crashed client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
