"""SIGTERM: players are told first (1012, and a close record on SSE), the process exits within
a few seconds, and nothing is logged as an error, even with a client that does not read."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx

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
            b'event: close\ndata: {"type":"close","code":1012,"reason":"service restart"}\n\n'
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
    assert {r["reason"] for r in closed} == {"service restart"}
