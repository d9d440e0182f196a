"""``mudgate soak``: drive a running server with simulated players and show whether its memory
stays flat.

N players connect, move between rooms, talk, tell and ask ``who``; each session ends after a
random time (``--churn-rate`` sessions end per second, on average), a quarter of them without
a close handshake (the client vanishes), and the player comes back. The server's RSS, its
connection count and every structure are read from ``/monitoring/memory`` as it goes. At the
end: a PNG chart, the trend of RSS after the warm-up, every structure before and after, the
errors seen, and a verdict (flat or growing) in ``soak.md``, ``soak.json`` and ``soak.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from ..auth import Authenticator
from ..memory.history import fit_line

__all__ = ["SoakConfig", "SoakReport", "parse_duration", "run_soak", "verdict"]

ROOMS = ("lobby", "hall", "tavern", "library", "garden", "tower", "crypt", "market")
# Structures that hold live players only: they must be back where they started.
LIVE_STRUCTURES = (
    "total_connections",
    "player_websockets",
    "connection_timestamps",
    "online_players",
    "room_occupants",
    "room_subscriptions",
)
VANISH_FRACTION = 0.25
LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends a TCP reset
WARMUP_FRACTION = 0.1


@dataclass(frozen=True)
class SoakConfig:
    url: str
    clients: int
    duration_seconds: float
    churn_rate: float  # sessions ended per second, all players together; 0: nobody leaves
    out: Path
    secret_key: str | None = None
    think_seconds: float = 1.0  # mean pause between one player's actions
    sample_seconds: float = 2.0
    max_slope_mb_per_hour: float = 10.0
    settle_seconds: float = 3.0


@dataclass
class Sample:
    at: float  # seconds since the start
    rss_mb: float
    server_connections: int
    live_clients: int
    sent: int
    received: int


@dataclass
class SoakReport:
    config: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    structures_before: dict[str, int] = field(default_factory=dict)
    structures_after: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sessions: int = 0
    vanished: int = 0
    sent: int = 0
    received: int = 0
    slope_mb_per_hour: float = 0.0
    r_squared: float = 0.0
    growth_mb: float = 0.0
    verdict: str = "flat"
    reasons: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 90s, 15m, 2h)") from None
    if not 0 < seconds <= 7 * 86400:
        raise ValueError(f"a soak lasts more than 0 s and at most 7 days, not {text!r}")
    return seconds


def verdict(report: SoakReport, max_slope_mb_per_hour: float) -> None:
    """Fill in the trend and the verdict: growing when RSS rose steadily after the warm-up
    (slope over the threshold, a straight-enough line and more than 2 MiB in all), or when a
    structure that holds only live players did not come back to its starting size."""
    samples = report.samples
    cutoff = samples[-1].at * WARMUP_FRACTION if samples else 0.0
    after_warmup = [s for s in samples if s.at >= cutoff]
    # Three points at least: two always make a perfect line.
    slope, r_squared = (
        fit_line([s.at for s in after_warmup], [s.rss_mb for s in after_warmup])
        if len(after_warmup) >= 3
        else (0.0, 0.0)
    )
    report.slope_mb_per_hour = round(slope * 3600, 2)
    report.r_squared = round(r_squared, 3)
    report.growth_mb = (
        round(after_warmup[-1].rss_mb - after_warmup[0].rss_mb, 2) if after_warmup else 0.0
    )
    reasons = []
    if (
        report.slope_mb_per_hour > max_slope_mb_per_hour
        and r_squared >= 0.6
        and report.growth_mb > 2.0
    ):
        reasons.append(
            f"RSS rose {report.growth_mb} MiB after the warm-up, "
            f"{report.slope_mb_per_hour} MiB/h (r² {report.r_squared})"
        )
    for name in LIVE_STRUCTURES:
        before = report.structures_before.get(name)
        after = report.structures_after.get(name)
        if before is not None and after is not None and after > before:
            reasons.append(f"{name} holds {after} entries after the soak, {before} before")
    report.reasons = reasons
    report.verdict = "growing" if reasons else "flat"
    report.hints = _hints(report.errors)


# What a refusal seen by the soak's players means, and what to do about it.
REFUSAL_HINTS = {
    "4029": "connections refused as rate-limited (4029): every soak player comes from this one "
    "address; raise MUDGATE_MAX_RATE_LIMIT_ENTRIES on the server under test",
    "1013": "connections refused with 1013 (server full, too many players, or shedding under "
    "memory pressure): see the server's /monitoring/memory and its logs",
}


def _hints(errors: dict[str, int]) -> list[str]:
    hints = []
    for code, hint in REFUSAL_HINTS.items():
        count = sum(n for name, n in errors.items() if name.endswith(f" {code}"))
        if count:
            hints.append(f"{count:,} {hint}")
    return hints


class _Counters:
    def __init__(self) -> None:
        self.live = 0
        self.sessions = 0
        self.vanished = 0
        self.sent = 0
        self.received = 0
        self.errors: Counter[str] = Counter()


class Soak:
    def __init__(self, config: SoakConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.counters = _Counters()
        self.stopping = asyncio.Event()
        base = config.url.rstrip("/")
        self.ws_url = base.replace("https://", "wss://").replace("http://", "ws://") + "/ws"
        self.authenticator = (
            Authenticator(config.secret_key, config.duration_seconds + 3600)
            if config.secret_key
            else None
        )
        self.players: list[str] = []

    async def token(self, slot: int) -> tuple[str, str]:
        if self.authenticator is not None:
            player = f"soak-{slot}"
            return player, self.authenticator.issue(player)
        response = await self.client.post("/auth/guest")
        if response.status_code != 200:
            raise SoakError(
                f"the server refused a guest token ({response.status_code}): give --secret-key "
                "(the server's MUDGATE_SECRET_KEY) so soak signs its own tokens"
            )
        body = response.json()
        return str(body["player"]), str(body["token"])

    async def player(self, token: str) -> None:
        """One simulated player: sessions one after another until the soak ends."""
        counters = self.counters
        mean_session = (
            self.config.clients / self.config.churn_rate if self.config.churn_rate else math.inf
        )
        refusals = 0
        while not self.stopping.is_set():
            try:
                async with connect(f"{self.ws_url}?token={token}", open_timeout=10) as ws:
                    counters.live += 1
                    counters.sessions += 1
                    try:
                        await self.session(ws, random.expovariate(1 / mean_session))
                    finally:
                        counters.live -= 1
                    if (
                        ws.state is State.OPEN
                        and not self.stopping.is_set()
                        and random.random() < VANISH_FRACTION
                    ):
                        # Gone without a close (a reset): the server must notice by itself.
                        counters.vanished += 1
                        sock = ws.transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                        ws.transport.abort()
                refusals = 0
            except Exception as error:  # counted, reported, and the player tries again later
                counters.errors[_describe(error)] += 1
                refusals += 1
                # Backing off, as a real client does, so a refusing server is not hammered.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(
                        min(30.0, 2.0 ** min(refusals, 5)) * (0.5 + random.random())
                    ):
                        await self.stopping.wait()

    async def session(self, ws: ClientConnection, seconds: float) -> None:
        counters = self.counters

        async def read() -> None:
            async for _ in ws:
                counters.received += 1

        reader = asyncio.create_task(read())
        ends = time.monotonic() + seconds
        try:
            while not self.stopping.is_set() and time.monotonic() < ends and not reader.done():
                await ws.send(json.dumps(self.action()))
                counters.sent += 1
                pause = random.expovariate(1 / self.config.think_seconds)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(pause, max(0.0, ends - time.monotonic()))):
                        await self.stopping.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def action(self) -> dict[str, str]:
        roll = random.random()
        if roll < 0.6:
            return {"op": "say", "text": f"soak {random.getrandbits(32):08x}"}
        if roll < 0.8:
            return {"op": "go", "room": random.choice(ROOMS)}
        if roll < 0.9 and self.players:
            return {"op": "tell", "to": random.choice(self.players), "text": "psst"}
        return {"op": "who"}

    async def memory(self) -> dict[str, Any]:
        response = await self.client.get("/monitoring/memory")
        response.raise_for_status()
        report: dict[str, Any] = response.json()
        return report

    @staticmethod
    def structures(memory: dict[str, Any]) -> dict[str, int]:
        return {**memory["connections"], **memory["data_structures"]}


class SoakError(Exception):
    """The soak cannot run; the message says what to do."""


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None) or getattr(getattr(error, "rcvd", None), "code", None)
    return f"{type(error).__name__} {code}" if code else type(error).__name__


async def run_soak(
    config: SoakConfig, progress: Callable[[SoakReport, _Counters, float], None] | None = None
) -> SoakReport:
    """Run the soak to its end (or until cancelled) and return the report, verdict included."""
    report = SoakReport(config={**asdict(config), "out": str(config.out), "secret_key": None})
    async with httpx.AsyncClient(base_url=config.url.rstrip("/"), timeout=10) as client:
        soak = Soak(config, client)
        try:
            memory = await soak.memory()
        except httpx.HTTPError as error:
            raise SoakError(
                f"cannot read {config.url}/monitoring/memory ({error}): is mudgate running there?"
            ) from None
        report.structures_before = soak.structures(memory)
        identities = [await soak.token(slot) for slot in range(config.clients)]
        soak.players = [player for player, _ in identities]
        started = time.monotonic()
        tasks = [asyncio.create_task(soak.player(token)) for _, token in identities]
        try:
            while (elapsed := time.monotonic() - started) < config.duration_seconds:
                try:
                    memory = await soak.memory()
                    report.samples.append(
                        Sample(
                            at=round(elapsed, 2),
                            rss_mb=memory["memory"]["rss_mb"],
                            server_connections=memory["connections"]["total_connections"],
                            live_clients=soak.counters.live,
                            sent=soak.counters.sent,
                            received=soak.counters.received,
                        )
                    )
                except httpx.HTTPError as error:
                    soak.counters.errors[f"monitoring {_describe(error)}"] += 1
                if progress is not None:
                    progress(report, soak.counters, elapsed)
                await asyncio.sleep(
                    min(config.sample_seconds, max(0.0, config.duration_seconds - elapsed))
                )
        finally:
            soak.stopping.set()
            await asyncio.wait(tasks, timeout=15)
            for task in tasks:
                task.cancel()
        # Give the server its moment to notice the vanished and run its one way out.
        await asyncio.sleep(config.settle_seconds)
        with contextlib.suppress(httpx.HTTPError):
            report.structures_after = soak.structures(await soak.memory())
        counters = soak.counters
        report.errors = dict(counters.errors)
        report.sessions, report.vanished = counters.sessions, counters.vanished
        report.sent, report.received = counters.sent, counters.received
    verdict(report, config.max_slope_mb_per_hour)
    return report


def progress_bar(stream: TextIO = sys.stderr) -> Callable[[SoakReport, _Counters, float], None]:
    """A one-line progress bar on a terminal; a line every 10 % otherwise."""
    tty = stream.isatty()
    shown = -1

    def show(report: SoakReport, counters: _Counters, elapsed: float) -> None:
        nonlocal shown
        total = report.config["duration_seconds"]
        done = min(1.0, elapsed / total)
        rss = f"{report.samples[-1].rss_mb:7.1f} MiB" if report.samples else "      ?"
        line = (
            f"[{'#' * int(done * 30):<30}] {done:4.0%} "
            f"{duration_text(elapsed)}/{duration_text(total)}  "
            f"live {counters.live:5}  sent {counters.sent:9,}  received {counters.received:10,}  "
            f"RSS {rss}  errors {sum(counters.errors.values()):,}"
        )
        if tty:
            stream.write(f"\r{line}")
            stream.flush()
        elif int(done * 10) > shown:
            shown = int(done * 10)
            stream.write(line + "\n")

    return show


def duration_text(seconds: float) -> str:
    """``seconds`` as h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"
