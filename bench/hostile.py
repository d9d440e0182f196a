"""Hostile floods: a healthy player's ping while each attack runs, and the server's RSS before,
during (the peak) and after it, mudgate beside the FastAPI docs pattern under the same attack.

Each attack is bounded (a few seconds, a fixed number of sockets) and comes from loopback; a
fresh server per attack and contender, contenders alternating. The healthy player pings
every 25 ms (four players pinging in turn, each every 100 ms, within mudgate's per-player
limit; mudgate: ``{"op": "ping"}``; the docs pattern: a message its echo broadcast sends back)
and the round trips are its latency. Late in each flood a newcomer connects: how long its
welcome takes says whether the server still lets players in.

Each attack also reports what it got back (close codes, answers), and for mudgate the run
keeps its memory budget (``GET /monitoring/memory``) scaled to what the flood made it hold,
beside the RSS it grew by: bench/report.py sets one against the other.

    python bench/hostile.py [--seconds 3] [--repeat 1] [--attacks NAME ...] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import re
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from mudgate.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import (
    DEFLATE_OFFER,
    TOKENS,
    Dialect,
    close_frame,
    deflated,
    handshake,
    ws_frame,
)
from harness import free_port, start, stop, write_result

CONTENDERS = ("mudgate", "fastapi-docs")
PLAYERS = 4
PING_EVERY = 0.1  # per player
MIB = 2**20
DEFAULT_LIMITS = {"MUDGATE_PLAYER_MESSAGES_PER_SECOND": "10", "MUDGATE_PLAYER_MESSAGE_BURST": "30"}
# --smoke: at most this many connections per attack, and a short wait after it.
SMOKE_SIZE = 4
# What the kernel may hold for one socket beside the process (SO_SNDBUF and SO_RCVBUF, each
# doubled for its bookkeeping): the part of the budget's "sockets" line that RSS cannot show.
# The benchmark leaves both at their defaults.
KERNEL_BYTES_PER_SOCKET = 2 * (
    Settings.model_fields["socket_send_buffer_bytes"].default
    + Settings.model_fields["socket_receive_buffer_bytes"].default
)

# What an attack saw (JSON numbers, and dicts of them), sent back from its process.
Report = dict[str, Any]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Healthy:
    """WebSocket players that ping in turn while the attack runs; the round trips, in
    seconds."""

    def __init__(self, port: int, dialect: Dialect) -> None:
        self.port = port
        self.dialect = dialect
        self.round_trips: list[float] = []
        self.unanswered = 0
        self.disconnected = 0

    async def run(self, stop_at: float) -> None:
        async def player(number: int) -> None:
            await asyncio.sleep(number * PING_EVERY / PLAYERS)
            await self._ping(f"healthy{number}", stop_at)

        await asyncio.gather(*(player(number) for number in range(PLAYERS)))

    async def _ping(self, name: str, stop_at: float) -> None:
        try:
            await self._pings(name, stop_at)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected += 1  # the server let a healthy player go

    async def _pings(self, name: str, stop_at: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(handshake(self.dialect.path(name)))
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"welcome")
        sequence = 0
        try:
            while time.monotonic() < stop_at:
                sequence += 1
                marker = f"probe-{name}-{sequence}".encode()
                frame = (
                    json.dumps({"op": "ping", "id": marker.decode()})
                    if self.dialect.name == "mudgate"
                    else marker.decode()
                )
                started = time.perf_counter()
                writer.write(ws_frame(frame))
                try:
                    async with asyncio.timeout(5):
                        received = b""
                        while marker not in received:
                            chunk = await reader.read(65536)
                            if not chunk:
                                raise ConnectionError("the server closed the healthy player")
                            received = received[-64:] + chunk
                    self.round_trips.append(time.perf_counter() - started)
                except TimeoutError:
                    self.unanswered += 1
                await asyncio.sleep(PING_EVERY)
        finally:
            writer.transport.abort()


# The attacks: each runs until ``stop_at`` (monotonic), from threads or tasks of its own, with
# ``size`` connections (or sockets) where it has a size.


def endless_head(port: int, stop_at: float, start: bytes, mib: int, connections: int) -> None:
    """``connections`` sockets, each sending ``start`` then one header line that goes on for
    ``mib`` MiB (or until ``stop_at``), in threads of their own."""

    def one() -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(1)
            sock.sendall(start)
            for _ in range(mib * 16):
                if time.monotonic() > stop_at:
                    break
                sock.sendall(b"a" * 65536)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def silent_sockets(port: int, stop_at: float, count: int) -> Report:
    """``count`` sockets that connect and never send a byte: how many opened."""
    sockets = []
    with contextlib.suppress(OSError):
        for _ in range(count):
            sockets.append(await asyncio.open_connection("127.0.0.1", port))
    await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
    for _, writer in sockets:
        writer.transport.abort()
    return {"opened": len(sockets)}


async def slow_loris(port: int, stop_at: float, count: int) -> None:
    """``count`` connections sending a request head at 10 bytes a second."""

    async def one() -> None:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Slow: " + b"s" * 1000
            for byte in head:
                if time.monotonic() > stop_at:
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)
            writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(count)))


def ping_flood(port: int, dialect: Dialect, stop_at: float) -> None:
    """A WebSocket client sending pings as fast as it can and never reading a pong."""
    with contextlib.suppress(OSError), socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(handshake(dialect.path("flooder")))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        sock.settimeout(0.2)
        pings = ws_frame(b"ping", opcode=0x9) * 1000
        while time.monotonic() < stop_at:
            with contextlib.suppress(TimeoutError):
                sock.sendall(pings)


async def say_flood(port: int, dialect: Dialect, stop_at: float) -> None:
    """A player sending room messages as fast as the connection takes them."""
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake(dialect.path("griefer")))
        await reader.readuntil(b"\r\n\r\n")
        drain = asyncio.create_task(_discard(reader))
        frame = ws_frame(dialect.say("m0:0:spam" * 10))
        while time.monotonic() < stop_at:
            writer.write(frame * 100)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, stop_at - time.monotonic())):
                    await writer.drain()
        drain.cancel()
        writer.transport.abort()


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


# Issue 18's floods: what a message costs while it arrives, compressed, or as a request body.

# One message per connection, as 2-byte continuation frames: 8 bytes a frame on the wire.
FRAGMENT_WIRE_BYTES = 60_000
MESSAGE_START = b'{"op": "say", "text": "'
BOMB_INFLATED_BYTES = 50 * MIB
BODY_BYTES = 60_000  # declared by each never-ending POST /commands; all but 10 are sent
REQUESTS_PER_PLAYER = 20


async def open_websocket(
    port: int, dialect: Dialect, player: str, *headers: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A WebSocket opened by hand: the stream just past the server's 101, and the 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(dialect.path(player), *headers))
    try:
        response = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError):
        writer.transport.abort()
        raise
    if not response.startswith(b"HTTP/1.1 101"):
        writer.transport.abort()
        raise ConnectionError(response.split(b"\r\n")[0].decode(errors="replace"))
    return reader, writer, response


async def ending(reader: asyncio.StreamReader, stop_at: float) -> str:
    """How the server ended a WebSocket by ``stop_at``: its close code and reason, "no close
    frame" (the connection just ended) or "still open"."""
    try:
        async with asyncio.timeout(max(0.01, stop_at - time.monotonic())):
            closed = await close_frame(reader)
    except TimeoutError:
        return "still open"
    return "no close frame" if closed is None else f"{closed[0]} {closed[1]}".strip()


async def _until(stop_at: float, awaitable: Awaitable[object]) -> None:
    """Await ``awaitable`` (a drain) no later than ``stop_at``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.01, stop_at - time.monotonic())):
            await awaitable


async def fragments(port: int, dialect: Dialect, stop_at: float, connections: int) -> Report:
    """``connections`` WebSockets, each starting a text message and sending it on as 2-byte
    continuation frames (FRAGMENT_WIRE_BYTES on the wire), never the last one: how the server
    ended each connection."""
    batch = b"".join(ws_frame(b"aa", opcode=0x0, fin=False) for _ in range(500))  # 4,000 bytes

    async def one(number: int) -> str:
        try:
            reader, writer, _ = await open_websocket(port, dialect, f"fragments{number}")
        except (OSError, asyncio.IncompleteReadError):
            return "refused"
        end = asyncio.create_task(ending(reader, stop_at))
        try:
            writer.write(ws_frame(MESSAGE_START, fin=False))
            for _ in range(FRAGMENT_WIRE_BYTES // len(batch)):
                if end.done() or time.monotonic() > stop_at:
                    break
                writer.write(batch)
                await _until(stop_at, writer.drain())
        except ConnectionError:
            pass  # closed by the server: the point
        try:
            return await end
        finally:
            writer.transport.abort()

    ends = await asyncio.gather(*(one(number) for number in range(connections)))
    return {"connections": connections, "ends": dict(Counter(ends))}


async def talk(port: int, dialect: Dialect, stop_at: float) -> int:
    """A player who says about 400 bytes to the room every 150 ms (within mudgate's
    per-player rate) and reconnects whenever the server drops it: how often it was dropped."""
    dropped = sequence = 0
    while time.monotonic() < stop_at:
        try:
            reader, writer, _ = await open_websocket(port, dialect, "talker")
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.15)
            continue
        listening = asyncio.create_task(_discard(reader))
        try:
            while time.monotonic() < stop_at and not listening.done():
                sequence += 1
                writer.write(ws_frame(dialect.say(f"news {sequence}: " + "the wyrm sleeps " * 25)))
                await asyncio.sleep(0.15)
        finally:
            dropped += listening.done() and time.monotonic() < stop_at
            listening.cancel()
            writer.transport.abort()
    return dropped


def agreed_window_bits(response: bytes) -> int | None:
    """The window the server holds a client to, from its 101 (None: no compression; 15: the
    server set no bound, so the client may use zlib's largest)."""
    offer = next(
        (line for line in response.lower().split(b"\r\n") if b"permessage-deflate" in line), None
    )
    if offer is None:
        return None
    bits = re.search(rb"client_max_window_bits=(\d+)", offer)
    return int(bits[1]) if bits else 15


async def deflate(port: int, dialect: Dialect, stop_at: float, connections: int) -> Report:
    """``connections`` WebSockets that ask for compression, in a room where a talker speaks
    throughout; over the first 60 % of the flood each says one compressed line (so the server
    both inflates and deflates for it). At 70 %, one more sends an inflate bomb: a frame of
    about 50 KB that inflates to 50 MiB. How many were compressed, how the bomb's connection
    ended, and when the bomb went."""
    began = time.monotonic()
    span = stop_at - began
    talker = asyncio.create_task(talk(port, dialect, stop_at))
    streams: list[Stream] = []
    listening: list[asyncio.Task[None]] = []

    async def squeezed(player: str) -> tuple[Stream, int | None]:
        reader, writer, response = await open_websocket(port, dialect, player, DEFLATE_OFFER)
        streams.append((reader, writer))
        return (reader, writer), agreed_window_bits(response)

    report: Report = {"connections": connections}
    try:
        (bomber_reader, bomber_writer), bomb_bits = await squeezed("bomber")
        # Its close frame, whenever it comes; the bomb is built meanwhile, in the window agreed
        # on (zlib lets go of the GIL: the rest of the attack goes on beside it).
        bomb_ending = asyncio.create_task(ending(bomber_reader, stop_at))
        bomb = asyncio.create_task(
            asyncio.to_thread(deflated, b"\0" * BOMB_INFLATED_BYTES, bomb_bits or 15)
        )
        opened = await asyncio.gather(
            *(squeezed(f"squeezed{number}") for number in range(connections)),
            return_exceptions=True,
        )
        said = [outcome for outcome in opened if not isinstance(outcome, BaseException)]
        report["refused"] = len(opened) - len(said)
        report["compressed"] = sum(bits is not None for _, bits in said) + (bomb_bits is not None)
        listening = [asyncio.create_task(_discard(reader)) for (reader, _), _ in said]
        # Each says one line, compressed if the server agreed (so it inflates for each too).
        for number, ((_, writer), bits) in enumerate(said):
            line = dialect.say(f"squeezed{number} says hello " * 10).encode()
            writer.write(ws_frame(deflated(line, bits), rsv1=True) if bits else ws_frame(line))
            left = max(0.0, began + span * 0.6 - time.monotonic())
            await asyncio.sleep(left / (len(said) - number))
        payload = await bomb
        await asyncio.sleep(max(0.0, began + span * 0.7 - time.monotonic()))
        report["marks"] = {"bomb": time.monotonic()}
        bomber_writer.write(ws_frame(payload, rsv1=bomb_bits is not None))
        report["bomb"] = {await bomb_ending: 1}
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
    finally:
        for task in listening:
            task.cancel()
        for _, writer in streams:
            writer.transport.abort()
    report["talker_dropped"] = await talker
    return report


async def slow_bodies(port: int, dialect: Dialect, stop_at: float, players: int) -> Report:
    """``players`` players, each opening its stream (mudgate: GET /events; the docs pattern
    has none, so its WebSocket) and then sending REQUESTS_PER_PLAYER POST /commands, each
    declaring BODY_BYTES and sending all of its body but the last ten bytes. How many requests
    the server still held at the end, and how it answered the others."""
    body = (MESSAGE_START + b"x" * BODY_BYTES)[:BODY_BYTES]

    async def stream(token: str) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if dialect.mudgate:
            writer.write(
                f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
        else:
            writer.write(handshake(dialect.path("stream")))
        await reader.readuntil(b"welcome")
        return reader, writer

    async def post(token: str) -> str:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return "refused"
        try:
            writer.write(
                f"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {BODY_BYTES}\r\n\r\n".encode()
                + body[:-10]
            )
            async with asyncio.timeout(max(0.01, stop_at - time.monotonic())):
                answer = await reader.read(65536)
        except TimeoutError:
            return "held"  # still waiting for the body's last bytes: the point
        except ConnectionError:
            return "reset"
        finally:
            writer.transport.abort()
        if not answer:
            return "closed"
        return answer.split(b" ", 2)[1].decode(errors="replace")  # the status

    async def player(number: int) -> list[str]:
        token = TOKENS.issue(f"slow{number}")
        try:
            reader, writer = await stream(token)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return ["no stream"]
        listening = asyncio.create_task(_discard(reader))
        try:
            return list(await asyncio.gather(*(post(token) for _ in range(REQUESTS_PER_PLAYER))))
        finally:
            listening.cancel()
            writer.transport.abort()

    answers = [
        answer for some in await asyncio.gather(*map(player, range(players))) for answer in some
    ]
    streams = players - answers.count("no stream")
    return {
        "players": players,
        "streams": streams,
        "requests": streams * REQUESTS_PER_PLAYER,
        "answers": dict(Counter(answer for answer in answers if answer != "no stream")),
    }


Attack = Callable[[int, Dialect, float, int], Awaitable[Report | None]]
Footprint = Callable[[int, Report], dict[str, int]]


def websockets_held(count: int) -> dict[str, int]:
    """The budget lines ``count`` WebSocket players take: a socket, a connection (its outbox
    included) and a message arriving each."""
    return {"sockets": count, "connections": count, "messages_in_flight": count}


def sockets_held(count: int, report: Report) -> dict[str, int]:
    return {"sockets": count}


@dataclass(frozen=True)
class Flood:
    """An attack, its size (connections or sockets), what it may make mudgate hold (budget
    structure -> entries, from its size and its report) and mudgate's settings it needs."""

    attack: Attack
    size: int
    footprint: Footprint
    settings: Mapping[str, str] = field(default_factory=dict)


FLOODS: dict[str, Flood] = {
    # 10 connections, each one header line that never ends (40 MiB at most).
    "endless header": Flood(
        lambda port, dialect, stop_at, size: asyncio.to_thread(
            endless_head, port, stop_at, b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ", 40, size
        ),
        10,
        sockets_held,
    ),
    "2,000 silent sockets": Flood(
        lambda port, dialect, stop_at, size: silent_sockets(port, stop_at, size),
        2000,
        lambda size, report: {"sockets": report.get("opened", size)},
    ),
    "slow loris (300)": Flood(
        lambda port, dialect, stop_at, size: slow_loris(port, stop_at, size), 300, sockets_held
    ),
    "ping flood, never reads": Flood(
        lambda port, dialect, stop_at, size: asyncio.to_thread(ping_flood, port, dialect, stop_at),
        1,
        lambda size, report: websockets_held(1),
    ),
    # 20 WebSocket upgrades, each with a 4 MiB header.
    "4 MiB upgrade headers (20)": Flood(
        lambda port, dialect, stop_at, size: asyncio.to_thread(
            endless_head, port, stop_at, handshake("/ws?token=" + TOKENS.issue("big"))[:-2], 4, size
        ),
        20,
        sockets_held,
    ),
    "say flood": Flood(
        lambda port, dialect, stop_at, size: say_flood(port, dialect, stop_at),
        1,
        lambda size, report: websockets_held(1),
    ),
    # 100 WebSockets, each one message in 2-byte fragments that never ends (60 KB on the wire).
    "fragments (100)": Flood(
        fragments, 100, lambda size, report: websockets_held(report.get("connections", size))
    ),
    # 100 compressed WebSockets in a talking room, and one inflate bomb.
    "deflate (100) and a bomb": Flood(
        deflate,
        100,
        lambda size, report: (
            Counter(websockets_held(report.get("connections", size) + 2))
            + Counter({"compressed_connections": report.get("compressed", size + 1)})
        ),
        {"MUDGATE_WS_PER_MESSAGE_DEFLATE": "true"},
    ),
    # 50 players with their streams, each with 20 POST /commands whose bodies never end.
    "slow bodies (50 players)": Flood(
        slow_bodies,
        50,
        lambda size, report: {
            "sockets": report.get("streams", size) + report.get("requests", 0),
            "connections": report.get("streams", size),
            "commands_in_flight": report.get("answers", {}).get("held", 0),
        },
    ),
}


def _attack(name: str, contender: str, port: int, *, size: int, pipe: Connection) -> None:
    """The attacker's process: it says when it is ready (its imports take most of a second),
    then floods until the moment it is sent back, and sends its report."""
    pipe.send("ready")
    stop_at = pipe.recv()
    report = asyncio.run(FLOODS[name].attack(port, Dialect(contender), stop_at, size))
    pipe.send(report or {})


async def join_late(port: int, dialect: Dialect, at: float, until: float) -> float:
    """A player who connects at ``at`` (monotonic), mid-flood, and stays until ``until``: how
    long its welcome took, in milliseconds (nan: none within 5 s)."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(handshake(dialect.path("newcomer")))
            await reader.readuntil(b"welcome")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        if writer is not None:
            writer.transport.abort()
        return float("nan")
    waited = time.perf_counter() - started
    listening = asyncio.create_task(_discard(reader))
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    listening.cancel()
    writer.transport.abort()
    return waited * 1000


def get_json(port: int, path: str, token: str | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# What /monitoring/memory's "sockets" says of the table now, rather than what happened.
SOCKET_STATE = frozenset(
    {
        "open",
        "capacity",
        "waiting",
        "receiving",
        "http",
        "websocket",
        "compressed",
        "compressed_capacity",
    }
)


def scaled_budget(budget: dict[str, Any], used: Mapping[str, int]) -> dict[str, Any]:
    """mudgate's budget lines for what a flood used (entries per structure), the healthy
    players and the newcomer included: each line's worst case, their sum, and the part of it
    in the kernel's socket buffers (in the budget, not in RSS)."""
    per_entry = {line["structure"]: line["bytes_per_entry"] for line in budget["lines"]}
    entries = Counter(used) + Counter(websockets_held(PLAYERS + 1))
    lines = {
        structure: {
            "entries": count,
            "bytes_per_entry": per_entry[structure],
            "worst_case_mib": round(count * per_entry[structure] / MIB, 2),
        }
        for structure, count in entries.items()
    }
    return {
        "lines": lines,
        "worst_case_mib": sum(count * per_entry[s] for s, count in entries.items()) / MIB,
        "kernel_mib": entries["sockets"] * KERNEL_BYTES_PER_SOCKET / MIB,
    }


async def measure(
    contender: str, name: str, size: int, seconds: float, settle: float
) -> dict[str, Any]:
    flood = FLOODS[name]
    port = free_port()
    # mudgate as it ships (the other benchmarks lift its per-player rate limit, not this one),
    # with what the flood needs switched on.
    process = start(contender, port, DEFAULT_LIMITS | dict(flood.settings))
    server = psutil.Process(process.pid)
    dialect = Dialect(contender)
    try:
        await asyncio.sleep(0.5)
        # Read before the flood: mudgate's first reading measures its entry sizes.
        budget = (
            (await asyncio.to_thread(get_json, port, "/monitoring/memory"))["memory_budget"]
            if dialect.mudgate
            else None
        )
        # The attacker is a process of its own (its loops must not slow the healthy player's),
        # ready before the flood's time starts.
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        attacker = context.Process(
            target=_attack, args=(name, contender, port), kwargs={"size": size, "pipe": theirs}
        )
        attacker.start()
        theirs.close()
        if not await asyncio.to_thread(ours.poll, 60):
            raise RuntimeError(f"the attacker of {name!r} did not start")
        ours.recv()
        rss_before = server.memory_info().rss
        cpu_before = sum(server.cpu_times()[:2])
        samples = [(time.monotonic(), rss_before)]
        stop_at = time.monotonic() + seconds
        ours.send(stop_at)
        healthy = Healthy(port, dialect)
        probe = asyncio.create_task(healthy.run(stop_at + 0.5))
        newcomer = asyncio.create_task(
            join_late(port, dialect, stop_at - min(1.0, seconds / 3), stop_at + 0.5)
        )
        while not probe.done() or not newcomer.done() or attacker.is_alive():
            samples.append((time.monotonic(), server.memory_info().rss))
            await asyncio.sleep(0.05)
        attacker.join()
        report: Report = ours.recv() if ours.poll() else {}
        probe.result()
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        await asyncio.sleep(settle)  # the attack is over: what is still held?
        rss_after = server.memory_info().rss
        trips = sorted(healthy.round_trips) or [float("nan")]
        outcome: dict[str, Any] = {
            "ping_p50_ms": statistics.median(trips) * 1000,
            "ping_p99_ms": trips[min(len(trips) - 1, int(len(trips) * 0.99))] * 1000,
            "pings": len(healthy.round_trips),
            "unanswered": healthy.unanswered,
            "disconnected": healthy.disconnected,
            "newcomer_ms": newcomer.result(),
            "rss_before_mib": rss_before / MIB,
            "rss_peak_mib": max(rss for _, rss in samples) / MIB,
            "rss_after_mib": rss_after / MIB,
            "server_cpu_seconds": cpu,
        }
        # The peak before each moment the attack marked (the bomb: what the rest cost).
        for mark, at in report.pop("marks", {}).items():
            before = max(rss for sampled_at, rss in samples if sampled_at <= at)
            outcome.setdefault("rss_peak_before_mib", {})[mark] = before / MIB
        outcome["attack"] = report
        if budget is not None:
            outcome["budget"] = scaled_budget(budget, flood.footprint(size, report))
            # What it counted (evictions, floods), and whether what RSS kept after the flood
            # is the allocator's: a forced cleanup runs malloc_trim.
            sockets = (await asyncio.to_thread(get_json, port, "/monitoring/memory"))["sockets"]
            outcome["sockets"] = {
                event: count
                for event, count in sockets.items()
                if count and event not in SOCKET_STATE
            }
            await asyncio.to_thread(
                get_json, port, "/monitoring/memory/cleanup", "bench-admin-token", "POST"
            )
            outcome["rss_after_trim_mib"] = server.memory_info().rss / MIB
        return outcome
    finally:
        stop(process)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs, dict by dict; a key a run lacks counts as 0 there
    (a close code that run did not see)."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for run in runs for key in run):
        values = [run.get(key, 0) for run in runs]
        if any(isinstance(value, dict) for value in values):
            merged[key] = medians([value or {} for value in values])
        else:
            merged[key] = round(statistics.median(values), 2)
    return merged


def summary(outcome: dict[str, Any]) -> str:
    """One line of what the attack got back, for the console."""
    attack = outcome["attack"]
    parts = [
        f"{count}x {what}"
        for key in ("ends", "answers", "bomb")
        for what, count in attack.get(key, {}).items()
    ]
    if "compressed" in attack:
        parts.append(f"{attack['compressed']} compressed")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each flood runs")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--attacks", nargs="*", choices=list(FLOODS), default=list(FLOODS))
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"at most {SMOKE_SIZE} connections per attack and 0.5 s after it: check it runs",
    )
    args = parser.parse_args()
    settle = 0.5 if args.smoke else 2.0
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {contender: [] for contender in CONTENDERS} for name in args.attacks
    }
    for repeat in range(args.repeat):
        for name in args.attacks:
            size = FLOODS[name].size
            size = min(size, SMOKE_SIZE) if args.smoke else size
            for contender in CONTENDERS:
                outcome = asyncio.run(measure(contender, name, size, args.seconds, settle))
                runs[name][contender].append(outcome)
                print(
                    f"run {repeat + 1}: {name:28} {contender:13} ping p99 "
                    f"{outcome['ping_p99_ms']:7.1f} ms ({outcome['unanswered']} unanswered, "
                    f"{outcome['disconnected']} disconnected), "
                    f"newcomer {outcome['newcomer_ms']:.1f} ms, "
                    f"cpu {outcome['server_cpu_seconds']:.2f} s, "
                    f"RSS {outcome['rss_before_mib']:.0f} → {outcome['rss_peak_mib']:.0f} → "
                    f"{outcome['rss_after_mib']:.0f} MiB {summary(outcome)}",
                    flush=True,
                )
    results = {
        name: {contender: medians(outcomes) for contender, outcomes in by_contender.items()}
        for name, by_contender in runs.items()
    }
    write_result(
        "hostile",
        {"seconds": args.seconds, "repeat": args.repeat, "smoke": args.smoke, "results": results},
    )


if __name__ == "__main__":
    main()
