"""Load-generator clients: raw WebSocket with just enough protocol to be cheap, speaking each
contender's dialect (mudgate's frames, the FastAPI docs and Node ws echo, Socket.IO's packets).

A client opens, says hello the way its server expects, sends text frames and counts received
messages carrying ``marker``; nothing else is parsed, so the generator stays cheap. The hostile
benchmark's attackers also build frames no polite client sends (unfinished messages, compressed
payloads) and read the server's close frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass

from harness import SECRET_KEY

from mudgate.auth import Authenticator

# How a room message's text starts in every dialect's encoding (all three are compact JSON).
MARKER = b'"text":"m'
TOKENS = Authenticator(SECRET_KEY, 3600)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Dialect:
    """How a contender's clients connect, join a room and talk."""

    name: str

    @property
    def socketio(self) -> bool:
        """python-socketio and Node's Socket.IO speak the same packets."""
        return self.name in ("socketio", "node-socketio")

    @property
    def mudgate(self) -> bool:
        """mudgate, this checkout's or a baseline's (bench --baseline)."""
        return self.name.startswith("mudgate")

    def path(self, player: str) -> str:
        if self.socketio:
            return "/socket.io/?EIO=4&transport=websocket"
        if self.mudgate:
            return f"/ws?token={TOKENS.issue(player)}"
        return "/ws"

    @property
    def hello(self) -> str | None:
        """What the client sends first: Socket.IO's connect to the default namespace."""
        return "40" if self.socketio else None

    @property
    def welcome(self) -> bytes:
        """What the server sends once the client is in (all three send a welcome event)."""
        return b"welcome"

    def say(self, text: str) -> str:
        if self.socketio:
            return "42" + _compact(["say", {"text": text}])
        return _compact({"op": "say", "text": text})

    def join(self, room: str) -> str | None:
        """None where the server has no rooms (the FastAPI docs pattern, Node's ws)."""
        if self.socketio:
            return "42" + _compact(["join", {"room": room}])
        if self.mudgate:
            return _compact({"op": "go", "room": room})
        return None


def ws_frame(
    data: str | bytes, opcode: int = 0x1, *, fin: bool = True, rsv1: bool = False
) -> bytes:
    """A masked client frame (text by default): ``fin=False`` for every frame of a message
    but its last, ``rsv1`` for a compressed one (permessage-deflate)."""
    payload = data.encode() if isinstance(data, str) else data
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        header = bytes([first, 0x80 | length])
    elif length < 65536:
        header = bytes([first, 0xFE]) + struct.pack("!H", length)
    else:
        header = bytes([first, 0xFF]) + struct.pack("!Q", length)
    # XOR as one big integer: a 50 KB frame is masked in microseconds, not a byte at a time.
    repeated = (mask * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return header + mask + masked.to_bytes(length, "big")


# What a client that wants compression offers: permessage-deflate, the client's window bounded
# (mudgate declines compression to a client that would not bound it).
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"


def deflated(data: bytes, window_bits: int = 9) -> bytes:
    """``data`` as one permessage-deflate payload (RFC 7692: deflated, then the empty block of
    the sync flush dropped). A window of 9 bits is within any the server may ask for."""
    compressor = zlib.compressobj(wbits=-window_bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def handshake(path: str, *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the server (unmasked): its opcode and payload."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def close_frame(reader: asyncio.StreamReader) -> tuple[int, str] | None:
    """Skip the server's frames until its close frame: its code (1005 if it gave none) and
    reason; None if the connection ended without one."""
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                if len(payload) < 2:
                    return 1005, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


CLOSE_FRAME = ws_frame(struct.pack("!H", 1000), opcode=0x8)


class RawClient:
    """One connection: counts the room messages it receives (and, for the probe, their
    latency from the send time the sender wrote into the text)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.count = 0
        self.latencies: list[float] | None = None
        self._tail = b""

    @classmethod
    async def open(cls, port: int, dialect: Dialect, player: str) -> RawClient:
        """Connect, say hello, and return once the server's welcome arrived."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake(dialect.path(player)))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
        if dialect.hello is not None:
            writer.write(ws_frame(dialect.hello))
        received = b""
        while dialect.welcome not in received:
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionError(f"closed before the welcome: {received[:200]!r}")
            received += chunk
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        self.writer.write(ws_frame(text))

    async def read_forever(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                data = self._tail + chunk
                self.count += data.count(MARKER)
                if self.latencies is not None:
                    now = time.perf_counter()
                    start = 0
                    while (at := data.find(MARKER, start)) != -1:
                        end = data.find(b'"', at + len(MARKER))
                        if end == -1:
                            break
                        sent = float(data[at + len(MARKER) : end].split(b":")[1])
                        self.latencies.append(now - sent)
                        start = end
                self._tail = data[-(len(MARKER) - 1) :]
        except (ConnectionError, asyncio.CancelledError):
            pass
