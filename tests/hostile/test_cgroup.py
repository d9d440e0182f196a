"""The memory promise, proven under a real limit (DESIGN.md invariant 11): ``mudgate serve``
in a memory cgroup of exactly the budget its caps say fits, attacked with every flood of
tests/hostile at once, is never OOM-killed, sheds at its levels, and serves a healthy player
throughout.

The server starts in the cgroup under a loose limit; its ``/monitoring/memory`` then says what
its caps allow in the worst case, the process itself included (``memory_budget``), and that
becomes the cgroup's limit. The floods fill every structure a client can fill (sockets,
connections, messages arriving, compressed connections, command bodies, outboxes of clients
that never read, the mailbox of players away; over telnet, logins, lines, subnegotiations and
MCCP2 players who never read) while one healthy player pings. Then the limit
is lowered under the server's feet, past its critical level: it must shed (``/health/ready``
503, a newcomer closed with 1013) while the healthy player plays on, and recover once the
limit is back. Redis's floods (test_redis.py) need a backplane and run there.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from ..e2e.clients import Player
from . import floods, telnet
from .cgroup import MemoryCgroup
from .gateway import Gateway, Healthy, poll

MIB = 1024 * 1024

# Caps a small node might run with: every line of the budget a client can fill is filled by
# one of the floods below.
CAPS: dict[str, object] = {
    "max_sockets": 500,
    "max_connections": 200,
    "max_players": 200,
    "outbox_max_bytes": 65536,
    "write_buffer_bytes": 16384,
    "max_pending_messages": 50,
    "max_pending_bytes": MIB,
    "max_rate_limit_keys": 2000,
    "max_subscriptions_per_player": 8,
    # Room history small enough for the flood below to reach its caps.
    "room_history_max_bytes": MIB,
    "room_history_max_topics": 300,
    "ws_per_message_deflate": True,
    "max_compressed_connections": 60,
    "request_timeout": 3,
    "write_timeout": 2,
    # Telnet beside them: its logins, lines, subnegotiations and MCCP2 states.
    "telnet_port": 0,
    "telnet_max_compressed": 15,
    # Levels that move as soon as memory does.
    "check_interval": 0.2,
    "cgroup_refresh_interval": 0.2,
    "memory_alert_hold": 0,
}
# Loose enough for the server to start and take its first reading under a limit.
START_LIMIT_BYTES = 1024 * MIB


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    made, why_not = MemoryCgroup.make()
    if made is None:
        pytest.skip(
            f"no memory cgroup can be made here ({why_not}): the memory promise is unproven"
        )
    try:
        yield made
    finally:
        made.remove()


@dataclass
class Watch:
    """What the cgroup and the server said while the floods ran."""

    peak_usage_bytes: int = 0
    readings: list[dict[str, Any]] = field(default_factory=list)
    not_ready: int = 0


async def watch(server: Gateway, cgroup: MemoryCgroup, seen: Watch, stop: asyncio.Event) -> None:
    """Sample the cgroup every 50 ms and the server's view of itself every 250 ms."""
    tick = 0
    while not stop.is_set():
        seen.peak_usage_bytes = max(seen.peak_usage_bytes, cgroup.usage_bytes())
        if tick % 5 == 0:
            try:
                report = await asyncio.to_thread(server.memory)
                seen.readings.append(
                    {**report["memory"], "shedding": report["memory_monitor"]["shedding"]}
                )
                if await asyncio.to_thread(ready_status, server) == 503:
                    seen.not_ready += 1
            except OSError:
                pass  # the server is busy or its sockets are full: the next tick
        tick += 1
        await asyncio.sleep(0.05)


def ready_status(server: Gateway) -> int:
    try:
        with urllib.request.urlopen(server.url + "/health/ready", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def every_flood(server: Gateway) -> list[Any]:
    """Every flood of tests/hostile at once, each bounded: what each returned (or raised)."""
    async with AsyncExitStack() as holding:
        # What is held while the rest runs: messages arriving, compressed players, silent
        # sockets, SSE streams that never read.
        await holding.enter_async_context(
            floods.unfinished_messages(server, players=30, size=65535)
        )
        # Real clients ask for compression (websockets' do): the players of the other floods,
        # the compressed bursts and the inflate bomb take up to 25 more of the 60.
        await holding.enter_async_context(floods.compressed_players(server, players=25))
        await holding.enter_async_context(floods.silent_sockets(server, count=100))
        await holding.enter_async_context(floods.stalled_streams(server, count=20))
        port = telnet.telnet_port(server)
        await holding.enter_async_context(
            telnet.held_lines(
                port, [server.token(f"liner{i}").encode() for i in range(10)], size=65535
            )
        )
        await holding.enter_async_context(telnet.silent_logins(port, count=30))
        await holding.enter_async_context(telnet.compressed_unread(server, port, players=15))
        return await asyncio.gather(
            # Telnet: subnegotiations that never end, IAC floods, answers never read.
            telnet.flood(port, b"\xff\xfa\xc9", b"y" * 4096, clients=20, most_bytes=1 << 20),
            telnet.flood(port, b"", b"\xff\xf1" * 4096, clients=5),
            telnet.unread_lines(port, b"\n", clients=10, seconds=2),
            # The attack that got mudgate OOM-killed: messages in 2-byte fragments.
            floods.fragment_flood(server, players=40),
            floods.fragment_flood(server, players=5, fragment=b"", frames=100000, name="empty"),
            floods.inflate_bomb(server),
            floods.compressed_burst(server, players=5),
            floods.slow_bodies(server, players=5, requests=4, hold=2),
            floods.ping_flood(server),
            floods.endless_header(server, clients=10, megabytes=8),
            floods.huge_upgrade(server, clients=10),
            floods.slow_loris(server, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", clients=30),
            floods.unread_pipeline(server, seconds=2),
            floods.room_flood(server, messages=30, size=3000),
            floods.history_flood(server, players=40, rooms=10, size=3000),
            floods.pending_flood(server, tells=40),
            floods.posted_commands(server),
            floods.bad_frames(server),
            player_flood(server),
            return_exceptions=True,
        )


async def player_flood(server: Gateway) -> int | None:
    griefer = await Player.connect(server.ws("griefer"))
    await floods.message_flood(griefer, {"op": "say", "text": "spam"}, messages=1000)
    return await griefer.closed()


async def test_a_server_in_a_cgroup_of_its_budget_survives_every_flood(
    cgroup: MemoryCgroup, gateway: Callable[..., Gateway]
) -> None:
    # (cgroup first: set up first, so removed last, once the gateway has stopped the server)
    cgroup.limit(START_LIMIT_BYTES)
    server = gateway(cgroup_procs=cgroup.procs, **CAPS)
    budget = server.memory()["memory_budget"]
    limit_bytes = int(budget["total_mb"] * MIB)
    assert cgroup.usage_bytes() < limit_bytes / 2, budget
    cgroup.limit(limit_bytes)
    await poll(lambda: server.memory()["memory"]["limit_mb"] == round(limit_bytes / MIB, 2))
    assert server.memory()["memory"]["limit_source"] == f"cgroup-v{cgroup.version}"

    seen, stop = Watch(), asyncio.Event()
    watching = asyncio.create_task(watch(server, cgroup, seen, stop))
    async with Healthy(server) as healthy:
        outcomes = await every_flood(server)
        limit_hits = cgroup.limit_hits()
        # Then under the server's feet: the limit lowered past its critical level.
        used = server.memory()["memory"]
        used_bytes = used["percent"] / 100 * used["limit_mb"] * MIB
        cgroup.limit(int(used_bytes / 0.93))
        await poll(lambda: ready_status(server) == 503)
        newcomer = await Player.connect(server.ws("newcomer"))
        assert await newcomer.closed() == 1013
        cgroup.limit(limit_bytes)
        await poll(lambda: ready_status(server) == 200)
    stop.set()
    await watching

    peak_mb = seen.peak_usage_bytes / MIB
    report = json.dumps(
        {
            "budget_mb": budget["total_mb"],
            "peak_usage_mb": round(peak_mb, 1),
            "peak_percent": max((r["percent"] for r in seen.readings), default=None),
            "outcomes": [repr(outcome)[:80] for outcome in outcomes],
        },
        indent=1,
    )
    print(report)  # the figures, for the record (pytest -s)
    assert server.process is not None
    assert server.process.poll() is None, server.logs()
    assert cgroup.oom_kills() == 0
    assert limit_hits == 0, report  # the floods never even made the kernel reclaim
    assert not [outcome for outcome in outcomes if isinstance(outcome, BaseException)], report
    structures = server.memory()["data_structures"]  # the history flood, at its caps
    assert structures["room_history"] <= CAPS["room_history_max_topics"]
    assert structures["room_history_bytes"] <= CAPS["room_history_max_bytes"]
    healthy.assert_served()
    # Whenever it read itself well past its critical level, it was shedding.
    for reading in seen.readings:
        if reading["percent"] >= 90 + 5:
            assert reading["shedding"], report
