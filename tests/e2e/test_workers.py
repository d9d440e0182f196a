"""``mudgate serve --workers 2``: two processes on one port, each a node of a real Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest

from ..hostile.gateway import Gateway
from ..redis_server import RedisServer
from .clients import Player
from .server import wait_for


@pytest.fixture
async def start_workers(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_workers(**settings)``: ``mudgate serve`` with two workers on the test's
    Redis, once both workers are in the cluster. Each must stop with status 0."""
    started: list[Gateway] = []

    async def start(**settings: object) -> Gateway:
        log = tmp_path / f"mudgate-{len(started)}.log"
        gateway = Gateway(
            log, workers=2, backplane=redis_server.url, presence_refresh=0.5, **settings
        ).start()
        started.append(gateway)
        await wait_for(lambda: ready(gateway), timeout=30)
        return gateway

    yield start
    for gateway in started:
        assert gateway.stop() == 0, gateway.logs()


@pytest.fixture
async def workers(start_workers: Callable[..., Any]) -> Gateway:
    gateway: Gateway = await start_workers()
    return gateway


def nodes(gateway: Gateway) -> dict[str, int]:
    """Each worker's node id and how many players it holds, from the cluster view."""
    cluster = gateway.get("/monitoring/cluster")
    return {node["node"]: node["players"] for node in cluster["nodes"]}


def worker_pids(gateway: Gateway) -> list[int]:
    return sorted(child.pid for child in psutil.Process(gateway.pid).children())


def ready(gateway: Gateway) -> bool:
    """Both workers in the cluster and listening (a worker joins the cluster during its
    start-up, and listens once that is complete)."""
    listening = [
        pid
        for pid in worker_pids(gateway)
        if any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == gateway.port
            for c in psutil.Process(pid).net_connections("tcp")
        )
    ]
    return len(listening) == 2 and len(nodes(gateway)) == 2


async def spread(gateway: Gateway, prefix: str, at_least: int = 40) -> list[Player]:
    """Players until both workers hold some (the kernel picks a worker per connection; each
    worker says how many it holds in its lease, renewed every presence_refresh)."""
    players: list[Player] = []
    while len(players) < at_least:
        player = await Player.connect(gateway.ws(f"{prefix}{len(players)}"))
        await player.next("welcome")
        players.append(player)
    await wait_for(lambda: sum(nodes(gateway).values()) == len(players))
    assert min(nodes(gateway).values()) > 0, "every connection went to one worker"
    return players


async def test_two_workers_share_one_port_rooms_tells_and_who(workers: Gateway) -> None:
    players = await spread(workers, "p", at_least=16)
    try:
        assert len(worker_pids(workers)) == 2
        assert all(count > 0 for count in nodes(workers).values())
        speaker, *others = players
        await speaker.send(op="say", text="to everyone, on both workers")
        for player in others:
            assert (await player.next("say"))["text"] == "to everyone, on both workers"
        last = f"p{len(players) - 1}"
        await speaker.send(op="tell", to=last, text="psst")
        assert (await players[-1].next("tell"))["text"] == "psst"
        await speaker.send(op="who", id=1)
        listed = (await speaker.next("who"))["players"]
        assert set(listed) >= {f"p{i}" for i in range(len(players))}
    finally:
        await asyncio.gather(*(player.close() for player in players))


async def test_the_per_player_cap_holds_across_workers(
    start_workers: Callable[..., Any],
) -> None:
    gateway = await start_workers(max_connections_per_player=1)
    # The same player connects again and again, to whichever worker the kernel picks (both,
    # over a dozen tries): each time the connection before is closed, wherever it is.
    connections: list[Player] = []
    for _ in range(12):
        player = await Player.connect(gateway.ws("alice"))
        await player.next("welcome")
        if connections:
            assert await connections[-1].closed() == 4009
        connections.append(player)
    await wait_for(lambda: sum(nodes(gateway).values()) == 1)
    await connections[-1].close()


async def test_a_worker_that_dies_is_started_again_and_its_players_reconnect(
    workers: Gateway,
) -> None:
    players = await spread(workers, "p", at_least=16)
    before = worker_pids(workers)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: victim not in worker_pids(workers) and ready(workers), timeout=30)
    # The victim's players lost their connection (the kernel reset it); the others keep theirs.
    dropped = [player for player in players if player.ws.close_code is not None]
    assert 0 < len(dropped) < len(players)
    assert any("exited with signal SIGKILL" in r["event"] for r in workers.records())
    # They come back, to either worker; the new worker took the dead one's place in the
    # cluster, so who lists every player once, at once, not after the presence TTL.
    names = {f"p{i}" for i in range(len(players))}
    back = [await Player.connect(workers.ws(f"p{players.index(player)}")) for player in dropped]
    try:
        for player in back:
            await player.next("welcome")
        await back[0].send(op="who", id=1)
        assert set((await back[0].next("who"))["players"]) == names
        await wait_for(lambda: sum(nodes(workers).values()) == len(players))
    finally:
        await asyncio.gather(*(p.close() for p in players if p not in dropped))
        await asyncio.gather(*(player.close() for player in back))


async def test_stopping_the_supervisor_closes_every_player_with_1012(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    gateway = Gateway(
        tmp_path / "mudgate.log", workers=2, backplane=redis_server.url, presence_refresh=0.5
    ).start()
    try:
        await wait_for(lambda: ready(gateway), timeout=30)
        players = await spread(gateway, "p", at_least=16)
        pids = worker_pids(gateway)
    finally:
        assert gateway.stop() == 0, gateway.logs()
    assert [await player.closed() for player in players] == [1012] * len(players)
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_several_workers_without_a_backplane_stop_saying_what_to_set() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mudgate", "serve", "--workers", "2", "--port", "0"],
        env={k: v for k, v in os.environ.items() if k != "MUDGATE_BACKPLANE"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode != 0
    assert "MUDGATE_BACKPLANE=redis://" in completed.stderr


def test_a_port_taken_by_another_server_stops_the_supervisor_before_any_worker() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [sys.executable, "-m", "mudgate", "serve", "--workers", "2", "--port", str(port)],
            env=os.environ | {"MUDGATE_BACKPLANE": "redis://127.0.0.1:1/0"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert completed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in completed.stderr
    assert "worker 1 started" not in completed.stderr


CRASHING = """
from mudgate import Settings, serve_workers

def build(settings):
    raise RuntimeError("the game cannot start")

serve_workers(build, Settings(workers=2, backplane="redis://127.0.0.1:1/0", port=0))
"""


async def test_a_worker_that_keeps_dying_is_started_again_ever_later(tmp_path: Path) -> None:
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=os.environ | {"MUDGATE_LOG_FORMAT": "json"},
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    delays: list[str] = []
    async with asyncio.timeout(30):
        while len(delays) < 6:  # three restarts of each worker
            line = (await process.stderr.readline()).decode()
            assert line, "the supervisor exited"
            if match := re.search(r"starting it again in ([\d.]+) s", line):
                delays.append(match.group(1))
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        await process.wait()
    assert sorted(delays) == ["1.0", "1.0", "2.0", "2.0", "4.0", "4.0"]


async def test_room_history_is_one_numbering_shared_by_the_workers(workers: Gateway) -> None:
    players = await spread(workers, "h", at_least=16)
    speaker, *listeners = players
    await speaker.send(op="say", text="line 0")
    heard = [await player.next("say") for player in listeners]
    assert len({(event["offset"], event["epoch"]) for event in heard}) == 1
    await asyncio.gather(*(player.close() for player in listeners))
    await wait_for(lambda: sum(nodes(workers).values()) == 1)
    for n in range(1, 6):
        await speaker.send(op="say", text=f"line {n}")
        await speaker.next("say")
    resume = quote(f"room:lobby:{heard[0]['offset']}:{heard[0]['epoch']}")
    back = [
        await Player.connect(f"{workers.ws(f'h{i + 1}')}&resume={resume}")
        for i in range(len(listeners))
    ]
    try:
        for player in back:  # on either worker: each gets lines 1-5, once, in order
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1].get("event") != "resumed":
                seen.append(await player.next("say", "resumed"))
            assert [event["text"] for event in seen[:-1]] == [f"line {n}" for n in range(1, 6)]
            assert seen[-1]["recovered"] is True
        await wait_for(lambda: sum(nodes(workers).values()) == len(players))
        assert min(nodes(workers).values()) > 1, "every resume went to one worker"
        # Either worker answers, and tells what Redis keeps for the whole cluster.
        await wait_for(
            lambda: (
                workers.get("/monitoring/memory")["data_structures"]["backplane_history_topics"]
                >= 1
            )
        )
    finally:
        await asyncio.gather(speaker.close(), *(player.close() for player in back))
