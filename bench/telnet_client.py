"""Load-generator telnet clients for the telnet benchmarks: sign in as a guest, optionally with
MCCP2, then sit idle or count the room lines they are sent.

A client reads the banner up to the name prompt, sends ``guest``, then ``IAC DO MCCP2`` if
it wants compression (offered to players once signed in; everything after the server's
``IAC SB MCCP2 IAC SE`` is one zlib stream), and waits for its welcome line. It answers no other option (GMCP, TTYPE,
NAWS... stay unanswered, as with a plain ``telnet``), so the server renders each event as
ANSI text once for every such client (``Outgoing.view``) and nothing else.
"""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from typing import Any

IAC, DO, SB, SE = 255, 253, 250, 240
MCCP2 = 86
GMCP = 201
DO_MCCP2 = bytes((IAC, DO, MCCP2))
DO_GMCP = bytes((IAC, DO, GMCP))
START_MCCP2 = bytes((IAC, SB, MCCP2, IAC, SE))
PROMPT = b"What is your name"
WELCOME = b"Welcome"
# How a room line says its text (render.py's say: "NAME says: TEXT"); the benchmarks' texts
# start with "m", as the WebSocket clients' MARKER expects.
MARKER = b" says: m"

# What a server needs for thousands of guests from one address: the guest rate limit (10 a
# minute by default) and the compressed connections' cap (1,000) raised out of the way.
SERVER_ENV = {
    "MUDGATE_GUEST_TOKENS_PER_MINUTE": "1000000",
    "MUDGATE_TELNET_MAX_COMPRESSED": "100000",
}


class Inflater:
    """The client's side of MCCP2: plain bytes until the server's ``IAC SB MCCP2 IAC SE``,
    one zlib stream after it (``mccp=False``: plain throughout)."""

    __slots__ = ("_stream", "_waiting", "mccp")

    def __init__(self, mccp: bool) -> None:
        self.mccp = mccp
        self._stream: Any = None
        self._waiting = b""

    @property
    def started(self) -> bool:
        return self._stream is not None

    def feed(self, data: bytes) -> bytes:
        if self._stream is not None:
            return bytes(self._stream.decompress(data))
        if not self.mccp:
            return data
        self._waiting += data
        at = self._waiting.find(START_MCCP2)
        if at == -1:
            return b""  # the marker may arrive split: the plain part matters to no one here
        self._stream = zlib.decompressobj()
        rest, self._waiting = self._waiting[at + len(START_MCCP2) :], b""
        return bytes(self._stream.decompress(rest))


def login(port: int, *, mccp: bool, gmcp: bool = False) -> socket.socket:
    """A blocking guest login on the telnet ``port``: the socket, once the welcome arrived."""
    sock = socket.create_connection(("127.0.0.1", port))
    received = b""
    while PROMPT not in received:
        received += _recv(sock, received)
    sock.sendall((DO_GMCP if gmcp else b"") + b"guest\r\n" + (DO_MCCP2 if mccp else b""))
    inflater = Inflater(mccp)
    text = b""
    while WELCOME not in text:
        text += inflater.feed(_recv(sock, text))
    return sock


def _recv(sock: socket.socket, so_far: bytes) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise RuntimeError(f"server closed a telnet connection: {so_far[-200:]!r}")
    return chunk


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    """Wait until the telnet port accepts (the gateway opens it beside HTTP)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class TelnetClient:
    """One telnet player in a room: counts the room lines it receives (and, for the probe,
    their latency from the send time the sender wrote into the text), as
    ``clients.RawClient`` does for a WebSocket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, inflater: Inflater
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.inflater = inflater
        self.count = 0
        self.latencies: list[float] | None = None
        self.wire_bytes = 0
        self.text_bytes = 0
        self._tail = b""

    @classmethod
    async def open(cls, port: int, *, mccp: bool, gmcp: bool = False) -> TelnetClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readuntil(PROMPT)
        writer.write((DO_GMCP if gmcp else b"") + b"guest\r\n" + (DO_MCCP2 if mccp else b""))
        inflater = Inflater(mccp)
        text = b""
        while WELCOME not in text:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed before the welcome: {text[-200:]!r}")
            text += inflater.feed(chunk)
        if mccp and not inflater.started:
            raise RuntimeError("the server did not start MCCP2")
        return cls(reader, writer, inflater)

    def say(self, text: str) -> None:
        self.writer.write(b"'" + text.encode() + b"\r\n")

    async def read_forever(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.wire_bytes += len(chunk)
                data = self._tail + self.inflater.feed(chunk)
                self.text_bytes += len(data) - len(self._tail)
                self.count += data.count(MARKER)
                if self.latencies is not None:
                    now = time.perf_counter()
                    start = 0
                    while (at := data.find(MARKER, start)) != -1:
                        end = data.find(b"\r\n", at + len(MARKER))
                        if end == -1:
                            break
                        sent = float(data[at + len(MARKER) : end].split(b":")[1])
                        self.latencies.append(now - sent)
                        start = end
                self._tail = data[-(len(MARKER) - 1) :]
        except (ConnectionError, asyncio.CancelledError):
            pass
