"""A worker that hangs keeps its listening socket, and with it a share of the new connections,
which nobody accepts. The supervisor, no longer hearing its heartbeat, kills it and starts
another: every new connection is answered again. A real ``mudgate serve --workers 2`` on a
real redis-server; the worker is stopped (SIGSTOP), as one stuck in a C call would be, or its
event loop is blocked by a game's command while the process runs on."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from websockets.exceptions import WebSocketException

from ..e2e.clients import Player
from ..redis_server import RedisServer
from .gateway import Gateway, poll

HEARTBEAT_TIMEOUT = 2.0
# What the supervisor (waking, killing, reaping) and the test (polling) may add to a deadline
# on a loaded machine.
LATENCY = 2.0
# The kill comes a heartbeat timeout after the worker's last heartbeat, which came before it
# was stopped (or its loop blocked), so within this of that. Nothing says how long before:
# a loop kept busy (players connecting) beats late, and the kill comes sooner. So how long it
# was silent is checked where it is measured, from its last heartbeat: the supervisor's log.
KILLED_WITHIN = HEARTBEAT_TIMEOUT + LATENCY
# A worker that lived under 10 s is started again 1 s after it died (0.5 s after a longer life).
REPLACED_WITHIN = KILLED_WITHIN + 1.0 + LATENCY


def worker_pids(gateway: Gateway) -> list[int]:
    return sorted(child.pid for child in psutil.Process(gateway.pid).children())


def listening(gateway: Gateway) -> list[int]:
    """The workers whose socket listens on the gateway's port."""
    return [pid for pid in worker_pids(gateway) if gateway.port in listening_ports(pid)]


def listening_ports(pid: int) -> set[int]:
    """The ports process ``pid`` listens on; none once it has exited."""
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def client_ports(gateway: Gateway, pid: int) -> set[int]:
    """The client-side ports of the players' connections worker ``pid`` holds."""
    return {
        c.raddr.port
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.laddr.port == gateway.port
    }


async def answered(gateway: Gateway, names: list[str], timeout: float = 5.0) -> int:
    """How many new WebSocket connections, one for each player named, get their welcome
    within ``timeout``."""

    async def one(name: str) -> bool:
        try:
            async with asyncio.timeout(timeout):
                player = await Player.connect(gateway.ws(name), open_timeout=None)
                try:
                    await player.next("welcome", timeout=timeout)
                finally:
                    await player.close()
        except (TimeoutError, OSError, WebSocketException):
            return False
        return True

    return sum(await asyncio.gather(*(one(name) for name in names)))


def verdicts(gateway: Gateway) -> list[dict[str, Any]]:
    """The supervisor's log records of the workers it judged hung, in order. On a machine
    starved of CPU for a whole timeout a healthy worker may be judged hung too (it was, for
    that long): a test looks for the worker it hung by its pid."""
    return [r for r in gateway.records() if "was not heard from" in r["event"]]


def verdict_on(gateway: Gateway, pid: int) -> dict[str, Any] | None:
    """The supervisor's verdict on worker ``pid``, once it has judged it hung: only one, the
    count of hung workers replaced going up by one with each verdict."""
    judged = verdicts(gateway)
    on_pid = [r for r in judged if r["pid"] == pid]
    if not on_pid:
        return None
    (record,) = on_pid
    assert record["hung_workers_replaced"] == judged.index(record) + 1
    return record


def newcomers(count: int, *coming_back: str) -> list[str]:
    """``count`` players' names: those coming back, then new ones."""
    return [*coming_back, *(f"new{i}" for i in range(count - len(coming_back)))]


async def test_a_hung_worker_is_killed_and_replaced_and_new_connections_are_answered(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    server = gateway(
        workers=2,
        backplane=redis_server.url,
        presence_refresh=0.5,
        worker_heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    await poll(lambda: len(listening(server)) == 2, timeout=30)
    victim, sibling = (psutil.Process(pid) for pid in worker_pids(server))
    # Players on both workers (the kernel picks one per connection), some of them the
    # hung worker's.
    players: list[Player] = []
    while len(players) < 40 and (
        len(players) < 10 or not 0 < len(client_ports(server, victim.pid)) < len(players)
    ):
        player = await Player.connect(server.ws(f"p{len(players)}"))
        await player.next("welcome")
        players.append(player)
    on_victim = client_ports(server, victim.pid)
    hung = [p for p in players if p.ws.local_address[1] in on_victim]
    others = [p for p in players if p not in hung]
    assert hung, "every player went to one worker"
    assert others, "every player went to one worker"
    victim.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # Killed (and reaped: a zombie is still running to psutil), then started again.
        await poll(lambda: not victim.is_running(), timeout=KILLED_WITHIN)
        killed_after = time.monotonic() - stopped_at
        await poll(lambda: len(worker_pids(server)) == 2, timeout=REPLACED_WITHIN)
        replaced_after = time.monotonic() - stopped_at
        await poll(lambda: len(listening(server)) == 2, timeout=30)
    finally:
        # Whatever happened, no stopped process outlives the test.
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    assert killed_after < KILLED_WITHIN, killed_after
    assert replaced_after < REPLACED_WITHIN, replaced_after
    assert victim.pid not in worker_pids(server)
    # The stopped worker is the one judged hung, after a whole timeout without a heartbeat,
    # and the one killed.
    record = verdict_on(server, victim.pid)
    assert record is not None, verdicts(server)
    assert record["silent_seconds"] >= HEARTBEAT_TIMEOUT
    assert [
        r
        for r in server.records()
        if "exited with signal SIGKILL" in r["event"] and r["pid"] == victim.pid
    ]
    # Its players lost their connection (the kernel reset it); the others keep theirs (unless
    # their worker, starved of CPU, was judged hung as well).
    assert [await player.closed(timeout=5) for player in hung] == [1006] * len(hung)
    kept = others if verdict_on(server, sibling.pid) is None else []
    for index, player in enumerate(kept):
        await player.send(op="ping", id=index)
        assert (await player.next("pong"))["id"] == index
    # Every new connection is answered, by the live worker or the new one; the hung worker's
    # players, coming back, are among them.
    back = [f"p{players.index(player)}" for player in hung]
    assert await answered(server, newcomers(20, *back)) == 20
    await asyncio.gather(*(player.close() for player in players if player not in hung))


FREEZING = """
import time

from mudgate import Gateway, Settings, create_app, serve_workers
from mudgate.commands import NoArgs, builtin_commands


def build(settings):
    commands = builtin_commands()

    @commands.register("freeze", NoArgs)
    def freeze(ctx, args):
        time.sleep(3600)  # a command that never returns: the worker's event loop is stuck

    gateway = Gateway(settings, commands=commands)
    return create_app(gateway), gateway


serve_workers(build, Settings())
"""


def run_script(gateway: Gateway, script: Path) -> list[psutil.Process]:
    """Run ``script`` as ``gateway``'s process, with its settings; its workers, once both
    listen."""
    with gateway.log_path.open("wb") as log:
        gateway.process = subprocess.Popen(
            [sys.executable, str(script)],
            env=gateway.env | {"MUDGATE_PORT": str(gateway.port)},
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 30
    while len(listening(gateway)) < 2:
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.05)
    return [psutil.Process(pid) for pid in worker_pids(gateway)]


async def test_a_worker_whose_event_loop_is_blocked_is_killed_and_replaced(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The process runs on (and its lag watchdog thread with it): only its loop is stuck.
    script = tmp_path / "freezing.py"
    script.write_text(FREEZING)
    server = Gateway(
        tmp_path / "freezing.log",
        workers=2,
        backplane=redis_server.url,
        worker_heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    workers: list[psutil.Process] = []
    try:
        workers += await asyncio.to_thread(run_script, server, script)
        player = await Player.connect(server.ws("frozen"))
        await player.next("welcome")
        port = player.ws.local_address[1]
        (frozen,) = [w.pid for w in workers if port in client_ports(server, w.pid)]
        await player.send(op="freeze")
        # The worker whose loop is blocked is the one judged hung, after a whole timeout
        # without a heartbeat.
        record = await poll(lambda: verdict_on(server, frozen), timeout=KILLED_WITHIN)
        assert record["silent_seconds"] >= HEARTBEAT_TIMEOUT
        assert await player.closed(timeout=5) == 1006
        await poll(
            lambda: frozen not in worker_pids(server) and len(listening(server)) == 2,
            timeout=30,
        )
        assert await answered(server, newcomers(20, "frozen")) == 20
    finally:
        status = await asyncio.to_thread(server.stop)
        # Whatever happened, no frozen worker outlives the test (its loop cannot act on
        # SIGTERM).
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    assert status == 0, server.logs()
