"""Closing every player at shutdown in batches spread over the shutdown timeout (the hub's
``close_connections`` carrying out a ``DrainPlan``), on a clock the test moves."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from mudgate.connection import Connection
from mudgate.hub import Hub
from mudgate.hub.drain import DrainPlan
from mudgate.protocol import CloseCode

from .conftest import FakeClock, RecordingConnection, RecordingTransport, connect, settle

REASON = "server restarting; reconnect within 5 s"


class LeavingTransport(RecordingTransport):
    """A client that answers its close at once: it leaves the hub."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.conn: Connection | None = None

    async def write_close(self, code: CloseCode, reason: str) -> None:
        await super().write_close(code, reason)
        assert self.conn is not None
        self.hub.disconnect(self.conn)


class LeavingConnection(RecordingConnection):
    """A connection over a ``LeavingTransport`` that notes when the hub closed it."""

    __slots__ = ("closed_at",)

    def __init__(self, hub: Hub, player_id: str) -> None:
        transport = LeavingTransport(hub)
        super().__init__(player_id, "127.0.0.1", hub.limits, transport=transport, clock=hub.clock)
        transport.conn = self
        self.closed_at: float | None = None

    def close(self, code: CloseCode, reason: str | None = None) -> None:
        if self.closed_at is None:
            self.closed_at = self._clock()
        super().close(code, reason)


def leaving(hub: Hub, player_id: str) -> LeavingConnection:
    conn = LeavingConnection(hub, player_id)
    hub.connect(conn)
    return conn


Sleep = Callable[[float], Awaitable[None]]


def fake_sleep(clock: FakeClock) -> tuple[list[float], Sleep]:
    """A sleep that moves the clock, then lets the loop run what is ready: no real waiting.
    Each wait asked for is kept."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)
        await settle()

    return waits, sleep


@pytest.mark.parametrize(
    ("connections", "timeout", "batch_size", "batches", "spread"),
    [
        (2000, 5.0, 58, 35, 3.4),  # the default timeout: batches 0.1 s apart over 3.4 s
        (10_000, 5.0, 286, 35, 3.4),
        (200, 1.0, 29, 7, 0.6),  # 0.7 s of a 1 s timeout: 7 ticks
        (50, 5.0, 10, 5, 0.4),  # never fewer than 10 a batch: a small server stops at once
        (10, 5.0, 10, 1, 0.0),
        (0, 5.0, 10, 1, 0.0),
        (2000, 0.0, 2000, 1, 0.0),  # no time to spread over: all at once
    ],
)
def test_a_drain_plan_spreads_batches_over_most_of_the_timeout(
    connections: int, timeout: float, batch_size: int, batches: int, spread: float
) -> None:
    plan = DrainPlan.over(connections, timeout)
    assert (plan.batch_size, plan.batches) == (batch_size, batches)
    assert plan.spread_seconds == pytest.approx(spread)
    split = list(plan.split(range(connections)))
    assert [due for due, _ in split] == pytest.approx([i * 0.1 for i in range(batches)])
    assert [item for _, batch in split for item in batch] == list(range(connections))


async def test_a_drain_closes_everyone_in_batches_spread_over_the_timeout(
    hub: Hub, clock: FakeClock
) -> None:
    conns = [leaving(hub, f"p{i}") for i in range(1000)]
    await settle()
    started = clock()
    waits, sleep = fake_sleep(clock)
    await hub.close_connections(
        CloseCode.SERVICE_RESTART, 5.0, reason=REASON, in_batches=True, sleep=sleep
    )
    assert all(conn.closed_with == (CloseCode.SERVICE_RESTART, REASON) for conn in conns)
    assert hub.connection_count() == 0
    # 35 batches of at most 29 (1000 / 35), 0.1 s apart, from the first at once to 3.4 s.
    by_time = Counter(round(conn.closed_at - started, 3) for conn in conns if conn.closed_at)
    assert sorted(by_time) == pytest.approx([i * 0.1 for i in range(35)])
    assert max(by_time.values()) == 29
    assert sum(by_time.values()) == 1000
    assert waits[:34] == pytest.approx([0.1] * 34)


async def test_a_drain_drops_whoever_does_not_leave_by_the_timeout(
    hub: Hub, clock: FakeClock
) -> None:
    stuck = [connect(hub, f"p{i}") for i in range(100)]  # they never answer their close
    await settle()
    started = clock()
    waits, sleep = fake_sleep(clock)
    await hub.close_connections(
        CloseCode.SERVICE_RESTART, 2.0, reason=REASON, in_batches=True, sleep=sleep
    )
    assert all(conn.close_code is CloseCode.SERVICE_RESTART for conn in stuck)
    assert hub.connection_count() == 0
    # 10 batches of 10, the last at 0.9 s; then the rest of the timeout for the last to leave.
    assert waits == pytest.approx([0.1] * 9 + [1.1])
    assert clock() - started == pytest.approx(2.0)


async def test_whoever_gets_in_during_a_drain_is_closed_with_the_last_batch(
    hub: Hub, clock: FakeClock
) -> None:
    first = [leaving(hub, f"p{i}") for i in range(30)]
    late: list[LeavingConnection] = []
    _, sleep = fake_sleep(clock)

    async def sleep_and_admit(seconds: float) -> None:
        if not late:  # a handshake that was under way when the door closed
            late.append(leaving(hub, "late"))
        await sleep(seconds)

    await hub.close_connections(
        CloseCode.SERVICE_RESTART, 5.0, in_batches=True, sleep=sleep_and_admit
    )
    assert late[0].closed_with == (CloseCode.SERVICE_RESTART, "service restart")
    assert all(conn.closed_with is not None for conn in first)
    assert hub.connection_count() == 0
    assert hub.admit("newcomer", "127.0.0.1") is not None  # refused throughout


async def test_without_batches_everyone_is_closed_at_once(hub: Hub, clock: FakeClock) -> None:
    conns = [leaving(hub, f"p{i}") for i in range(100)]
    started = clock()
    _, sleep = fake_sleep(clock)
    await hub.close_connections(CloseCode.GOING_AWAY, 5.0, sleep=sleep)
    assert {conn.closed_at for conn in conns} == {started}
    assert hub.connection_count() == 0


async def test_a_drain_with_nobody_connected_does_not_wait(hub: Hub, clock: FakeClock) -> None:
    waits, sleep = fake_sleep(clock)
    await hub.close_connections(CloseCode.SERVICE_RESTART, 5.0, in_batches=True, sleep=sleep)
    assert waits == []
