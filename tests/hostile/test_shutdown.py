"""SIGTERM: players are told first (1012, and a close record on SSE), the process exits within
a few seconds, and nothing is logged as an error, even with a client that does not read."""

from __future__ import annotations

import asyncio
import bisect
import signal
import time
from collections.abc import Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect

from ..e2e.clients import Player
from .floods import open_stalled
from .gateway import Gateway, poll


async def test_sigterm_closes_players_first_and_exits_quickly(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(shutdown_timeout=2, write_timeout=2)
    player = await Player.connect(server.ws("alice"))
    await player.next("welcome")
    stalled = await asyncio.to_thread(open_stalled, server.port, server.token("stalled"))
    headers = {"Authorization": f"Bearer {server.token('carol')}"}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/events", headers=headers) as stream,
    ):
        await poll(lambda: server.memory()["connections"]["total_connections"] == 3)
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        records = b""
        async with asyncio.timeout(10):
            async for chunk in stream.aiter_bytes():
                records += chunk
        assert records.endswith(
            b'event: close\ndata: {"type":"close","code":1012,'
            b'"reason":"server restarting; reconnect within 5 s"}\n\n'
        )
        assert await player.closed() == 1012
        exit_status = await asyncio.to_thread(server.process.wait, 20)
    elapsed = time.monotonic() - started
    stalled.close()
    assert exit_status == -signal.SIGTERM  # re-raised, as process managers expect
    assert elapsed < 6, elapsed  # the players' grace, uvicorn's, and the lifespan's stop
    records_logged = server.records()
    assert not [r for r in records_logged if r["level"] in ("error", "critical")]
    closed = [r for r in records_logged if r["event"] == "connection closed"]
    assert {r["player"] for r in closed} == {"alice", "carol", "stalled"}
    assert {r["reason"] for r in closed} == {"server restarting; reconnect within 5 s"}


async def test_sigterm_closes_players_in_batches_spread_over_the_shutdown_timeout(
    gateway: Callable[..., Gateway],
) -> None:
    # 200 players, 1 s to shut down: 7 batches of 29, 0.1 s apart (0.7 of the timeout).
    server = gateway(shutdown_timeout=1, reconnect_window=2.5)
    players = await asyncio.gather(*(connect(server.ws(f"p{i}")) for i in range(200)))
    await poll(lambda: server.memory()["connections"]["total_connections"] == 200)

    async def closed_at(ws: ClientConnection) -> float:
        await ws.wait_closed()
        return time.monotonic()

    waiting = [asyncio.create_task(closed_at(ws)) for ws in players]
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        times = sorted(await asyncio.gather(*waiting))
    assert {(ws.close_code, ws.close_reason) for ws in players} == {
        (1012, "server restarting; reconnect within 2.5 s")
    }
    assert await asyncio.to_thread(server.process.wait, 20) == -signal.SIGTERM
    # Spread over about 0.6 s, never most of them in the same instant.
    assert times[-1] - times[0] >= 0.4, times
    assert max(bisect.bisect(times, t + 0.05) - i for i, t in enumerate(times)) <= 100, times
    logged = [r for r in server.records() if r["event"].startswith("closing 200 connections")]
    assert logged, server.logs()
