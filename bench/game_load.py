"""What the game benchmarks share (bench/game_split.py, bench/game_restart.py): the bench game
(bench/bench_game.py) served in the gateway's process or in one of its own, the processes'
own CPU, and players that send ``act`` with an id and match every answer to it.

A player reads its socket in chunks and finds what it needs with byte patterns, as the other
benchmarks' clients do (a Python WebSocket parser would make the load generator the limit):
the reply and the error frames carry the command's id, room events are counted, and the
gateway's notices (``game_restarting``, ``game_ready``) are time-stamped on arrival.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from bench_game import ROOM_MARKER
from clients import TOKENS, handshake, ws_frame
from harness import launch, stop

BENCH = Path(__file__).resolve().parent
SETUPS = ("in-process", "split")
ADMIN_TOKEN = "bench-admin-token"

_REPLY = re.compile(rb'"event":"acted","id":(\d+)')
# A JSON string escapes its quotes, so the message ends at the first bare one.
_ERROR = re.compile(rb'"type":"error","code":"(\w+)","message":"(?:[^"\\]|\\.)*"(?:,"id":(\d+))?')
_NOTICE = re.compile(rb'"event":"(game_restarting|game_ready)"')


def start_game(
    setup: str, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The bench game on ``port``: ``in-process`` (``Gateway(settings, game=game)``) or
    ``split`` (``mudgate serve --game``, the game in a process the gateway starts)."""
    if setup == "in-process":
        command = [sys.executable, str(BENCH / "bench_game.py"), "--port", str(port)]
    else:
        command = [sys.executable, "-m", "mudgate", "serve", "--port", str(port)]
        command += ["--game", "bench_game:game", "--log-level", "warning"]
    # The game's process imports bench_game: the gateway hands it its own environment.
    path = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    return launch(command, port, {"PYTHONPATH": path} | (extra_env or {}), setup)


def stop_game(process: subprocess.Popen[bytes], game_pids: list[int]) -> None:
    """Stop the gateway (which stops its game), then any game process it left behind."""
    stop(process)
    for pid in game_pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            continue


async def game_state(port: int) -> dict[str, Any]:
    """GET /monitoring/game: the game's pid and state (``in_process`` in the gateway's)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /monitoring/game HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    response = await reader.read()
    writer.close()
    state: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return state


async def game_ready(port: int, timeout_seconds: float = 30.0) -> dict[str, Any]:
    """Poll /monitoring/game until the game takes commands; its state."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        state = await game_state(port)
        if state["state"] in ("ready", "in_process"):
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"the game is not ready: {state}")
        await asyncio.sleep(0.1)


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of this one process (not its children: the gateway's game is
    its child, and is counted apart)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss / 2**20)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nan for none), nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class Ledger:
    """Every command sent, by id, and every answer to it: what a player waited and whether
    each command was answered once."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.answers: Counter[int] = Counter()
        self.latencies: dict[int, float] = {}  # id: seconds from the send to the first answer
        self.errors: Counter[str] = Counter()
        self._next_id = 0

    def next_id(self) -> int:
        self._next_id += 1
        self.sent[self._next_id] = time.perf_counter()
        return self._next_id

    def answered(self, request_id: int, now: float) -> None:
        self.answers[request_id] += 1
        if request_id not in self.latencies and request_id in self.sent:
            self.latencies[request_id] = now - self.sent[request_id]

    @property
    def unanswered(self) -> int:
        return sum(1 for request_id in self.sent if request_id not in self.answers)

    @property
    def answered_twice(self) -> int:
        return sum(1 for count in self.answers.values() if count > 1)

    def latencies_ms(self, since: float = -math.inf, until: float = math.inf) -> list[float]:
        """Latencies of the commands sent in [since, until), milliseconds."""
        return [
            latency * 1000
            for request_id, latency in self.latencies.items()
            if since <= self.sent[request_id] < until
        ]


class GamePlayer:
    """One player's WebSocket: sends ``act`` with an id from the ledger, and reads back the
    answers, the room events and the gateway's notices."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ledger: Ledger
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ledger = ledger
        self.room_events = 0
        self.notices: list[tuple[str, float]] = []
        self.disconnected_at: float | None = None
        self._closing = False

    @classmethod
    async def open(cls, port: int, name: str, ledger: Ledger) -> GamePlayer:
        """Connect and return once the welcome arrived."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake(f"/ws?token={TOKENS.issue(name)}"))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
        received = b""
        while b'"event":"welcome"' not in received:
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionError(f"closed before the welcome: {received[:200]!r}")
            received += chunk
        return cls(reader, writer, ledger)

    def act(self) -> None:
        request_id = self.ledger.next_id()
        self.writer.write(ws_frame(f'{{"op":"act","id":{request_id}}}'))

    def go(self, room: str) -> None:
        self.writer.write(ws_frame(json.dumps({"op": "go", "room": room})))

    async def read_forever(self) -> None:
        tail = b""
        try:
            while chunk := await self.reader.read(65536):
                now = time.perf_counter()
                data = tail + chunk
                # Every frame here is a flat JSON object: a frame cut by the chunk's end is
                # what follows its last "}", kept for the next chunk.
                end = data.rfind(b"}") + 1
                data, tail = data[:end], data[end:]
                self.room_events += data.count(ROOM_MARKER)
                for match in _REPLY.finditer(data):
                    self.ledger.answered(int(match[1]), now)
                if b'"type":"error"' in data:
                    for match in _ERROR.finditer(data):
                        self.ledger.errors[match[1].decode()] += 1
                        if match[2] is not None:
                            self.ledger.answered(int(match[2]), now)
                if b'"event":"game_' in data:
                    self.notices += [(match[1].decode(), now) for match in _NOTICE.finditer(data)]
        except (ConnectionError, asyncio.CancelledError):
            pass
        if not self._closing and self.disconnected_at is None:
            self.disconnected_at = time.perf_counter()

    def abort(self) -> None:
        """Reset the connection (the end of a run, not a disconnect to count)."""
        self._closing = True
        self.writer.transport.abort()
