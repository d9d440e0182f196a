"""``mudgate serve --workers 2 --game``: each worker a node of a real Redis with a game process
of its own; a game's timer runs once per cluster, and SIGHUP to the supervisor restarts every
worker's game without disconnecting anyone."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ..e2e.clients import Player
from ..e2e.server import wait_for
from ..e2e.test_workers import ready, worker_pids
from ..hostile.gateway import Gateway
from ..redis_server import RedisServer

GAME = "tests.game.sample_game:game"


def game_pids(gateway: Gateway) -> set[int]:
    """The game processes of every worker (not one that has exited and awaits its reaping)."""
    pids = set()
    for worker in worker_pids(gateway):
        for child in psutil.Process(worker).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "game" in child.cmdline():
                    pids.add(child.pid)
            except psutil.Error:  # gone meanwhile
                continue
    return pids


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer) -> Iterator[Gateway]:
    gateway = Gateway(
        tmp_path / "mudgate.log",
        workers=2,
        backplane=redis_server.url,
        presence_refresh=0.5,
        game=GAME,
    )
    gateway.env["PYTHONPATH"] = os.getcwd()
    yield gateway.start()
    assert gateway.stop() == 0, gateway.logs()


async def test_each_worker_runs_a_game_whose_timer_runs_once_per_cluster(
    workers: Gateway,
) -> None:
    await wait_for(lambda: ready(workers), timeout=30)
    await wait_for(lambda: len(game_pids(workers)) == 2, timeout=30)
    players = [await Player.connect(workers.ws(f"p{n}")) for n in range(6)]
    try:
        for player in players:
            await player.next("welcome", timeout=10)
            await player.send(op="subscribe", channel="clock")
        # Ticks every 0.05 s on both workers' games; only the lease's holder sends them.
        ticks = [await players[n % 6].next("tick", timeout=10) for n in range(30)]
        assert len({tick["pid"] for tick in ticks}) == 1
        assert ticks[0]["pid"] in game_pids(workers)

        before = game_pids(workers)
        os.kill(workers.pid, signal.SIGHUP)  # the supervisor passes it to every worker
        for player in players:
            await player.next("game_restarting", timeout=10)
            await player.next("game_ready", timeout=30)
        await wait_for(lambda: len(game_pids(workers)) == 2, timeout=30)
        assert not game_pids(workers) & before, "every worker's game was replaced"
        for n, player in enumerate(players):
            await player.send(op="hello", id=n)
        for player in players:
            assert (await player.next("greeting", timeout=10))["pid"] in game_pids(workers)
            assert player.ws.close_code is None  # nobody was disconnected
    finally:
        await asyncio.gather(*(player.close() for player in players))
