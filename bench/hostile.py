"""Hostile floods: a healthy player's ping while each attack runs, and the server's RSS before,
during (the peak) and after it, mudgate beside the FastAPI docs pattern under the same attack.

Each attack is bounded (a few seconds, a fixed number of sockets) and comes from loopback; a
fresh server per attack and contender, contenders alternating. The healthy player pings
every 25 ms (four players pinging in turn, each every 100 ms, within mudgate's per-player
limit; mudgate: ``{"op": "ping"}``; the docs pattern: a message its echo broadcast sends back)
and the round trips are its latency.

    python bench/hostile.py [--seconds 3] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import TOKENS, Dialect, handshake, ws_frame
from harness import free_port, start, stop, write_result

CONTENDERS = ("mudgate", "fastapi-docs")
PLAYERS = 4
PING_EVERY = 0.1  # per player
MIB = 2**20
DEFAULT_LIMITS = {"MUDGATE_PLAYER_MESSAGES_PER_SECOND": "10", "MUDGATE_PLAYER_MESSAGE_BURST": "30"}


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


# The attacks: each runs until ``stop_at`` (monotonic), from threads or tasks of its own.


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


async def silent_sockets(port: int, stop_at: float) -> None:
    """2,000 sockets that connect and never send a byte."""
    sockets = []
    with contextlib.suppress(OSError):
        for _ in range(2000):
            sockets.append(await asyncio.open_connection("127.0.0.1", port))
    await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
    for _, writer in sockets:
        writer.transport.abort()


async def slow_loris(port: int, stop_at: float) -> None:
    """300 connections sending a request head at 10 bytes a second."""

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

    await asyncio.gather(*(one() for _ in range(300)))


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


Attack = Callable[[int, Dialect, float], Awaitable[None]]

ATTACKS: dict[str, Attack] = {
    # 10 connections, each one header line that never ends (40 MiB at most).
    "endless header": lambda port, dialect, stop_at: asyncio.to_thread(
        endless_head, port, stop_at, b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ", 40, 10
    ),
    "2,000 silent sockets": lambda port, dialect, stop_at: silent_sockets(port, stop_at),
    "slow loris (300)": lambda port, dialect, stop_at: slow_loris(port, stop_at),
    "ping flood, never reads": lambda port, dialect, stop_at: asyncio.to_thread(
        ping_flood, port, dialect, stop_at
    ),
    # 20 WebSocket upgrades, each with a 4 MiB header.
    "4 MiB upgrade headers (20)": lambda port, dialect, stop_at: asyncio.to_thread(
        endless_head, port, stop_at, handshake("/ws?token=" + TOKENS.issue("big"))[:-2], 4, 20
    ),
    "say flood": say_flood,
}


def _attack(name: str, contender: str, port: int, stop_at: float) -> None:
    asyncio.run(ATTACKS[name](port, Dialect(contender), stop_at))  # type: ignore[arg-type]


async def measure(contender: str, name: str, seconds: float) -> dict[str, float]:
    port = free_port()
    # mudgate as it ships: the other benchmarks lift its per-player rate limit, not this one.
    process = start(contender, port, DEFAULT_LIMITS)
    server = psutil.Process(process.pid)
    dialect = Dialect(contender)
    try:
        await asyncio.sleep(0.5)
        rss_before = server.memory_info().rss
        cpu_before = sum(server.cpu_times()[:2])
        peak = rss_before
        stop_at = time.monotonic() + seconds
        healthy = Healthy(port, dialect)
        probe = asyncio.create_task(healthy.run(stop_at + 0.5))
        # The attacker is a process of its own: its loops must not slow the healthy player's.
        attacker = multiprocessing.get_context("spawn").Process(
            target=_attack, args=(name, contender, port, stop_at)
        )
        attacker.start()
        while not probe.done() or attacker.is_alive():
            peak = max(peak, server.memory_info().rss)
            await asyncio.sleep(0.05)
        attacker.join()
        probe.result()
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        await asyncio.sleep(2.0)  # the attack is over: what is still held?
        rss_after = server.memory_info().rss
        trips = sorted(healthy.round_trips) or [float("nan")]
        return {
            "ping_p50_ms": statistics.median(trips) * 1000,
            "ping_p99_ms": trips[min(len(trips) - 1, int(len(trips) * 0.99))] * 1000,
            "pings": len(healthy.round_trips),
            "unanswered": healthy.unanswered,
            "disconnected": healthy.disconnected,
            "rss_before_mib": rss_before / MIB,
            "rss_peak_mib": peak / MIB,
            "rss_after_mib": rss_after / MIB,
            "server_cpu_seconds": cpu,
        }
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each flood runs")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--attacks", nargs="*", choices=list(ATTACKS), default=list(ATTACKS))
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {contender: [] for contender in CONTENDERS} for name in args.attacks
    }
    for repeat in range(args.repeat):
        for name in args.attacks:
            for contender in CONTENDERS:
                outcome = asyncio.run(measure(contender, name, args.seconds))
                runs[name][contender].append(outcome)
                print(
                    f"run {repeat + 1}: {name:28} {contender:13} ping p99 "
                    f"{outcome['ping_p99_ms']:7.1f} ms ({outcome['unanswered']} unanswered, "
                    f"{outcome['disconnected']} disconnected), "
                    f"cpu {outcome['server_cpu_seconds']:.2f} s, "
                    f"RSS {outcome['rss_before_mib']:.0f} → {outcome['rss_peak_mib']:.0f} → "
                    f"{outcome['rss_after_mib']:.0f} MiB",
                    flush=True,
                )
    results: dict[str, Any] = {
        name: {
            contender: {
                key: round(statistics.median(run[key] for run in outcomes), 2)
                for key in outcomes[0]
            }
            for contender, outcomes in by_contender.items()
        }
        for name, by_contender in runs.items()
    }
    write_result("hostile", {"seconds": args.seconds, "repeat": args.repeat, "results": results})


if __name__ == "__main__":
    main()
