"""The event loop's lag: measured, kept for a minute, and a block named while it lasts."""

from __future__ import annotations

import asyncio
import time

from mudgate.commands import CommandRegistry, NoArgs, running_command
from mudgate.health.lag import WINDOW_SECONDS, LoopLag
from mudgate.hub import Hub

from ..conftest import FakeClock, connect, make_settings


def test_lags_fill_the_histogram_and_the_recent_window(clock: FakeClock) -> None:
    lag = LoopLag(0.5, clock=clock)
    for value in (0.001, 0.02, 0.7):
        lag.record(value)
        clock.advance(1.0)
    assert lag.count == 3
    assert lag.buckets[0.005] == 1
    assert lag.buckets[0.025] == 2
    assert lag.buckets[1.0] == 3
    assert lag.latest_seconds == 0.7
    assert lag.recent_max() == 0.7
    clock.advance(WINDOW_SECONDS)
    assert lag.recent_max() == 0.0  # a minute on, forgotten


def test_the_window_holds_one_worst_lag_a_second(clock: FakeClock) -> None:
    lag = LoopLag(0.5, clock=clock)
    for _ in range(10_000):
        lag.record(0.01)
        clock.advance(0.01)
    assert len(lag._recent) <= WINDOW_SECONDS + 1


async def test_a_blocking_command_is_named_while_it_blocks() -> None:
    hub = Hub(make_settings())
    await hub.start()
    commands = CommandRegistry()

    @commands.register("compute", NoArgs)
    def compute(ctx: object, args: NoArgs) -> None:
        time.sleep(0.4)  # what a CPU-bound handler does to the loop

    lag = LoopLag(0.1, explain=running_command)
    lag.start()
    try:
        await asyncio.sleep(0.15)  # a beat or so, before the block
        conn = connect(hub, "alice")
        assert await commands.dispatch(hub, conn, b'{"op": "compute"}') is None
        await asyncio.sleep(0.15)  # the loop's next beat measures the whole block
    finally:
        await lag.stop()
    block = lag.blocked()
    assert block is not None
    assert block.running.startswith("command 'compute' from alice, at ")
    assert "test_lag.py" in block.running
    assert block.seconds >= 0.3
    assert lag.recent_max() >= 0.3
