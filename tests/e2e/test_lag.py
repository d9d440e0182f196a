"""A game command that blocks the event loop is reported, naming it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from mudgate.commands import CommandContext, NoArgs, builtin_commands
from mudgate.gateway import Gateway

from ..conftest import make_settings
from .clients import Player
from .server import RunningServer, wait_for


@pytest.fixture
def server() -> Iterator[RunningServer]:
    commands = builtin_commands()

    @commands.register("compute", NoArgs)
    def compute(ctx: CommandContext, args: NoArgs) -> None:
        time.sleep(0.5)  # what a CPU-bound handler does to everyone
        ctx.reply("computed")

    settings = make_settings(loop_lag_threshold=0.2)
    running = RunningServer(settings, gateway=Gateway(settings, commands=commands))
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_a_blocking_command_raises_an_alert_that_names_it(server: RunningServer) -> None:
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        await alice.send(op="compute")
        await alice.next("computed")
    await wait_for(server.gateway.watch.lag.blocked)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        alerts = (await http.get("/monitoring/memory-alerts")).json()
        memory = (await http.get("/monitoring/memory")).json()
    (blocked,) = [d for d in alerts["details"] if d["code"] == "EVENT_LOOP_BLOCKED"]
    assert blocked["level"] == "WARNING"
    assert "command 'compute' from alice" in blocked["message"]
    assert blocked["value"] >= 0.4
    loop = memory["event_loop"]
    assert loop["recent_max_lag_seconds"] >= 0.4
    assert loop["last_block"]["running"].startswith("command 'compute' from alice, at ")
