"""The hostile clients of tests/hostile, as bounded attacks on a running ``mudgate serve``.

Each attack comes from loopback, is bounded in volume or time, and returns what the server
answered. The test of each limit asserts what its attack must meet; test_cgroup.py runs them
all at once against a server in a memory cgroup of exactly its budget.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from ..e2e.clients import Player
from .gateway import Gateway, connection, open_connection, read_all

MIB = 1024 * 1024

TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# Speaking WebSocket by hand


def handshake(port: int, token: str, *, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET /ws?token=" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
        + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )  # fmt: skip


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client frame (clients mask theirs) of any length."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    if not payload:
        return head + mask
    repeated = (mask * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return head + mask + masked.to_bytes(size, "big")


async def websocket(
    port: int, token: str, *, extra: bytes = b"", rcvbuf: int | None = None
) -> tuple[Stream, bytes]:
    """A WebSocket opened by hand: the stream, just past the 101 response, and that response."""
    reader, writer = await open_connection(port, rcvbuf=rcvbuf)
    writer.write(handshake(port, token, extra=extra))
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101"), response
    return (reader, writer), response


async def close_frame(
    reader: asyncio.StreamReader, timeout: float = 10.0
) -> tuple[int, str] | None:
    """Read the server's frames until its close frame: its code and reason; None if the
    connection ended without one. TimeoutError if the server neither closes nor ends it."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                first, second = await reader.readexactly(2)
                size = second & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(size)
                if first & 0x0F == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return code, payload[2:].decode()
        except (asyncio.IncompleteReadError, ConnectionError):
            return None


def open_stalled(port: int, token: str) -> socket.socket:
    """A WebSocket that completes its handshake and never reads again (a blocking socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake(port, token))
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing past the handshake
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


# What one message costs while it arrives


async def fragment_flood(
    server: Gateway,
    *,
    players: int = 20,
    fragment: bytes = b"aa",
    frames: int = 20000,
    batch: int = 512,
    name: str = "fragments",
) -> list[tuple[int, str] | None]:
    """Each of ``players`` starts a text message and sends up to ``frames`` continuation
    frames of ``fragment`` (b"": empty ones), never the last: how each was closed."""

    async def attack(number: int) -> tuple[int, str] | None:
        (reader, writer), _ = await websocket(server.port, server.token(f"{name}{number}"))
        # Read as it sends: a client still sending a megabyte after the server's close is
        # reset (the server reads and drops only so much), and its unread close lost with it.
        closed = asyncio.create_task(close_frame(reader, timeout=30))
        try:
            writer.write(frame(TEXT, b'{"op": "say", "text": "', fin=False))
            chunk = frame(CONTINUATION, fragment, fin=False) * batch
            for _ in range(frames // batch):
                if closed.done():
                    break
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # closed by the server: the point
        try:
            return await closed
        finally:
            writer.transport.abort()

    return list(await asyncio.gather(*(attack(number) for number in range(players))))


@asynccontextmanager
async def unfinished_messages(
    server: Gateway, *, players: int, size: int, frame_bytes: int = 4096, name: str = "unfinished"
) -> AsyncIterator[list[Stream]]:
    """``players`` WebSockets that each send every frame of a ``size``-byte message but its
    last, and hold it unfinished while the block runs."""
    async with AsyncExitStack() as stack:
        streams = []
        for number in range(players):
            (reader, writer), _ = await websocket(server.port, server.token(f"{name}{number}"))
            stack.callback(writer.transport.abort)
            streams.append((reader, writer))
            body = b"x" * (size - 1)
            pieces = [body[i : i + frame_bytes] for i in range(0, len(body), frame_bytes)]
            writer.write(frame(TEXT, pieces[0], fin=False))
            for piece in pieces[1:]:
                writer.write(frame(CONTINUATION, piece, fin=False))
            await writer.drain()
        yield streams


def compressed_bytes(size: int, window_bits: int) -> bytes:
    """``size`` zero bytes as one permessage-deflate payload (a few hundred bytes per MiB)."""
    compressor = zlib.compressobj(wbits=-window_bits)
    data = compressor.compress(b"\0" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # permessage-deflate drops the flush's empty block


async def inflate_bomb(
    server: Gateway, *, inflated: int = 50 * MIB, window_bits: int = 9
) -> tuple[int, str] | None:
    """A compressed frame of about 50 KB that inflates to ``inflated`` bytes: how the server
    closed the connection."""
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    (reader, writer), response = await websocket(server.port, server.token("bomber"), extra=offer)
    try:
        assert b"permessage-deflate" in response, response
        writer.write(frame(TEXT, compressed_bytes(inflated, window_bits), rsv1=True))
        return await close_frame(reader)
    finally:
        writer.transport.abort()


@asynccontextmanager
async def compressed_players(server: Gateway, *, players: int) -> AsyncIterator[list[Player]]:
    """``players`` real clients that ask for compression, connected while the block runs."""
    async with AsyncExitStack() as stack:
        connected = []
        for number in range(players):
            player = await Player.connect(server.ws(f"squeezed{number}"), compression="deflate")
            stack.push_async_callback(player.close)
            await player.next("welcome")
            connected.append(player)
        yield connected


def is_compressed(player: Player) -> bool:
    response = player.ws.response
    assert response is not None
    return "permessage-deflate" in response.headers.get("Sec-WebSocket-Extensions", "")


# Requests that never end


async def slow_bodies(
    server: Gateway,
    *,
    players: int = 1,
    requests: int = 10,
    declared: int = 60000,
    hold: float = 1.0,
    name: str = "slow",
) -> list[bytes]:
    """Each of ``players`` opens its stream, then sends ``requests`` POST /commands whose
    bodies say ``declared`` bytes and send ten, held for ``hold`` seconds: what each request
    got back (b"" for those the server was still waiting on)."""

    async def post(token: bytes) -> bytes:
        async with connection(server.port) as (reader, writer):
            writer.write(
                b"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + token + b"\r\n"
                b"Content-Length: %d\r\n\r\n" % declared + b'{"op": "sa'
            )
            try:
                async with asyncio.timeout(hold):
                    return await reader.read()
            except TimeoutError:
                return b""  # still waiting for the body: the point

    async def player(number: int) -> list[bytes]:
        token = server.token(f"{name}{number}").encode()
        async with connection(server.port) as (reader, writer):
            writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token)
            writer.write(b"\r\n\r\n")
            await reader.readuntil(b"welcome")
            return list(await asyncio.gather(*(post(token) for _ in range(requests))))

    answers = await asyncio.gather(*(player(number) for number in range(players)))
    return [answer for some in answers for answer in some]


# Requests that never arrive


async def endless_header(server: Gateway, *, clients: int = 10, megabytes: int = 40) -> list[bytes]:
    """Each client sends one header line that never ends: what each got back."""

    def attack() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            chunk = b"a" * 65536
            try:
                for _ in range(megabytes * 16):
                    sock.sendall(chunk)
            except OSError:
                pass  # the server stopped it
            sock.settimeout(10)
            return sock.recv(65536)

    return list(await asyncio.gather(*(asyncio.to_thread(attack) for _ in range(clients))))


async def huge_upgrade(server: Gateway, *, clients: int = 20) -> list[bytes]:
    """WebSocket handshakes with one header of up to 4 MiB: what each got back."""

    def attack() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            request = handshake(server.port, server.token("big"))
            sock.sendall(request[:-2] + b"X-Big: ")
            try:
                for _ in range(64):
                    sock.sendall(b"b" * 65536)
            except OSError:
                pass
            sock.settimeout(10)
            return sock.recv(65536)

    return list(await asyncio.gather(*(asyncio.to_thread(attack) for _ in range(clients))))


async def slow_loris(
    server: Gateway, request_head: bytes, *, clients: int = 50, bytes_per_second: float = 20
) -> list[bytes]:
    """Each client sends the first 40 bytes of ``request_head`` a byte at a time: what each
    got back once the server gave up on it."""

    async def attack() -> bytes:
        async with connection(server.port) as (reader, writer):
            try:
                for byte in request_head[:40]:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1 / bytes_per_second)
            except ConnectionError:
                pass
            return await read_all(reader)

    return list(await asyncio.gather(*(attack() for _ in range(clients))))


@asynccontextmanager
async def silent_sockets(server: Gateway, *, count: int) -> AsyncIterator[list[Stream]]:
    """``count`` connections that never send a byte, open while the block runs."""
    streams = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(count)]
    try:
        yield streams
    finally:
        for _, writer in streams:
            writer.transport.abort()


async def unread_pipeline(server: Gateway, *, seconds: float = 3.0) -> int:
    """Pipelined requests for ``seconds`` from a client that never reads: how many went."""
    request = b"GET /monitoring/memory HTTP/1.1\r\nHost: x\r\n\r\n"

    def attack() -> int:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.settimeout(0.1)
            sent = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    sock.sendall(request * 100)
                    sent += 100
                except TimeoutError:
                    pass  # the server stopped reading: the kernels' buffers are full
            return sent

    return await asyncio.to_thread(attack)


# Clients that never read


async def ping_flood(server: Gateway, *, seconds: float = 3.0, name: str = "flooder") -> int:
    """Pings for ``seconds`` from a client that never reads a pong: how many went before the
    server stopped it."""
    ping = frame(PING, b"ping") * 1000

    def attack() -> int:
        with open_stalled(server.port, server.token(name)) as sock:
            sock.settimeout(0.1)
            sent = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    sock.sendall(ping)
                    sent += 1000
                except TimeoutError:
                    pass
                except OSError:
                    break  # closed by the server
            return sent

    return await asyncio.to_thread(attack)


def open_stream(port: int, token: str) -> socket.socket:
    """An SSE stream whose client never reads what it is sent."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@asynccontextmanager
async def stalled_streams(
    server: Gateway, *, count: int, name: str = "reader"
) -> AsyncIterator[list[socket.socket]]:
    """``count`` SSE streams in the lobby whose clients never read, open while the block runs."""
    streams = [open_stream(server.port, server.token(f"{name}{i}")) for i in range(count)]
    try:
        yield streams
    finally:
        for stream in streams:
            stream.close()


async def room_flood(server: Gateway, *, messages: int, size: int, name: str = "shouter") -> None:
    """One player says ``messages`` lines of ``size`` bytes in the lobby (its rate limit set
    high by the test), as fast as it can."""
    async with await Player.connect(server.ws(name)) as shouter:
        await shouter.next("welcome")
        for _ in range(messages):
            await shouter.send(op="say", text="x" * size)


async def history_flood(
    server: Gateway, *, players: int, rooms: int, size: int, name: str = "wanderer"
) -> int:
    """``players`` players each walk into ``rooms`` rooms of their own and say one line of
    ``size`` bytes in each (within the default message burst): every line is kept in its
    room's history, so the history reaches its caps in topics and bytes. How many were let in
    (the others were refused while the server shed load)."""

    async def wander(n: int) -> bool:
        async with await Player.connect(server.ws(f"{name}{n}")) as player:
            try:
                await player.next("welcome")
            except TimeoutError:  # refused: the server sheds while the floods fill it
                return False
            for room in range(rooms):
                await player.send(op="go", room=f"{name}{n}-{room}")
                await player.send(op="say", text="h" * size)
            await player.send(op="ping")
            await player.next("pong", timeout=30)
            return True

    return sum(await asyncio.gather(*(wander(n) for n in range(players))))


async def message_flood(griefer: Player, frame: object, *, messages: int = 3000) -> None:
    """``griefer`` sends ``messages`` copies of ``frame`` (JSON, or text as it is) as fast as
    it can, until it is closed for it."""
    raw = frame if isinstance(frame, str) else json.dumps(frame)
    try:
        for _ in range(messages):
            await griefer.ws.send(raw)
    except Exception:  # closed mid-flood: the point
        pass


async def pending_flood(
    server: Gateway, *, away: int = 5, senders: int = 10, tells: int = 30, size: int = 3000
) -> list[str]:
    """``away`` players come and go (seen lately: tells to them wait), then each of
    ``senders`` tells them ``tells`` lines of ``size`` characters: the answers' codes."""
    for number in range(away):
        async with await Player.connect(server.ws(f"away{number}")) as player:
            await player.next("welcome")

    async def send(number: int) -> list[str]:
        answers = []
        async with await Player.connect(server.ws(f"teller{number}")) as teller:
            await teller.next("welcome")
            for count in range(tells):
                await teller.send(op="tell", to=f"away{count % away}", text="x" * size)
                answer = await teller.next("told", "error")
                answers.append(answer.get("code", "told"))
        return answers

    results = await asyncio.gather(*(send(number) for number in range(senders)))
    return [code for codes in results for code in codes]


async def posted_commands(
    server: Gateway, *, posts: int = 2000, name: str = "poster"
) -> tuple[list[int], bytes]:
    """A player with an SSE stream POSTs ``posts`` commands as fast as it can, stopping when
    its stream ends: the statuses, and what the stream carried."""
    headers = {"Authorization": f"Bearer {server.token(name)}"}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/events", headers=headers) as stream,
    ):

        async def read_stream() -> bytes:
            records = b""
            async for chunk in stream.aiter_bytes():
                records += chunk
            return records

        reading = asyncio.create_task(read_stream())
        statuses = []
        while not reading.done() and len(statuses) < posts:
            response = await http.post(
                "/commands", json={"op": "say", "text": "x"}, headers=headers
            )
            statuses.append(response.status_code)
        async with asyncio.timeout(10):
            return statuses, await reading


async def bad_frames(server: Gateway, *, frames: int = 100, name: str = "garbler") -> int | None:
    """A player sends ``frames`` JSON documents nested a thousand deep: its close code."""
    async with await Player.connect(server.ws(name)) as garbler:
        await garbler.next("welcome")
        await message_flood(garbler, "[" * 1000, messages=frames)
        return await garbler.closed()


async def compressed_burst(
    server: Gateway,
    *,
    players: int = 20,
    messages: int = 100,
    size: int = 65000,
    name: str = "burst",
) -> list[tuple[int, str] | None]:
    """Each of ``players`` asks for compression, then sends ``messages`` text messages of
    ``size`` bytes at once, each compressed to a few dozen bytes (about 10 KB in all): how
    each was closed. Parsed all at once, one read of them would be ``messages`` inflated
    messages in memory."""
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

    async def attack(number: int) -> tuple[int, str] | None:
        (reader, writer), response = await websocket(
            server.port, server.token(f"{name}{number}"), extra=offer
        )
        try:
            assert b"permessage-deflate" in response, response
            compressor = zlib.compressobj(wbits=-9)
            burst = b"".join(
                frame(
                    TEXT,
                    (compressor.compress(b"x" * size) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4],
                    rsv1=True,
                )
                for _ in range(messages)
            )
            writer.write(burst)
            return await close_frame(reader)
        finally:
            writer.transport.abort()

    return list(await asyncio.gather(*(attack(number) for number in range(players))))
