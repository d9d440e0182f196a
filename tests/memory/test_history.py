"""The history ring and the trend: slopes, warm-up, and when growth is called a leak."""

from __future__ import annotations

from typing import Any

from mudgate.memory.history import HistoryPoint, MemoryHistory

from ..conftest import FakeClock, make_settings


def history(clock: FakeClock, **overrides: Any) -> MemoryHistory:
    values: dict[str, Any] = {"sample_interval": 10, "history_seconds": 3600, "trend_warmup": 0}
    values.update(overrides)
    clock.now = 6000.0  # on a minute boundary: a fed minute is one minute of the fit
    return MemoryHistory(make_settings(**values), clock=clock)


def feed(
    memory: MemoryHistory,
    clock: FakeClock,
    *,
    minutes: int,
    rss_per_minute: float,
    connections_per_minute: float = 0.0,
    structure_per_minute: int = 0,
) -> None:
    """Six samples a minute; each minute's floor grows linearly, with noise above it."""
    for minute in range(minutes):
        for tick in range(6):
            memory.record(
                HistoryPoint(
                    at=1.8e9 + clock.now,
                    clock=clock.now,
                    rss_mb=100 + rss_per_minute * minute + (tick % 3) * 2,
                    percent=10.0,
                    limit_mb=1000.0,
                    connections=int(10 + connections_per_minute * minute),
                    structures={"pending_messages": structure_per_minute * minute, "last_seen": 5},
                )
            )
            clock.advance(10)


def test_the_ring_keeps_an_hour_at_full_resolution_and_a_day_per_minute(clock: FakeClock) -> None:
    memory = history(clock)
    feed(memory, clock, minutes=25 * 60, rss_per_minute=0)
    assert len(memory.points(3600)) == 360
    assert len(memory.points()) == 360
    day = memory.points(86400)
    assert 360 < len(day) <= 360 + 24 * 60
    assert day == sorted(day, key=lambda point: point.clock)
    assert len(memory) <= 360 + 24 * 60


def test_flat_memory_is_flat(clock: FakeClock) -> None:
    memory = history(clock)
    feed(memory, clock, minutes=30, rss_per_minute=0)
    trend = memory.trend()
    assert trend.slope_mb_per_hour == 0
    assert not trend.leak_suspected
    assert trend.explanation == "memory is flat"
    assert trend.hours_to_limit is None


def test_steady_growth_with_flat_connections_is_a_suspected_leak(clock: FakeClock) -> None:
    memory = history(clock)
    feed(memory, clock, minutes=30, rss_per_minute=1.0, structure_per_minute=100)
    trend = memory.trend()
    assert trend.slope_mb_per_hour == 60.0  # the per-minute floors rise 1 MiB a minute
    assert trend.r_squared == 1.0
    assert trend.leak_suspected
    assert trend.growing_structure == "pending_messages"
    assert "pending_messages grew by 2900 entries" in trend.explanation
    assert trend.hours_to_limit is not None
    assert trend.hours_to_limit == round((1000 - 129) / 60, 2)


def test_growth_that_follows_connections_is_not_a_leak(clock: FakeClock) -> None:
    memory = history(clock)
    feed(memory, clock, minutes=30, rss_per_minute=1.0, connections_per_minute=5)
    trend = memory.trend()
    assert trend.slope_mb_per_hour == 60.0
    assert not trend.leak_suspected
    assert trend.explanation == "memory rises with the number of connections"
    assert trend.connections_change == 145


def test_the_warm_up_is_ignored(clock: FakeClock) -> None:
    memory = history(clock, trend_warmup=600)
    feed(memory, clock, minutes=10, rss_per_minute=10.0)  # start-up growth, all in the warm-up
    assert memory.trend().points == 0
    assert memory.trend().explanation == "not enough data yet"
    feed(memory, clock, minutes=20, rss_per_minute=0.0)
    trend = memory.trend()
    assert trend.points == 20
    assert not trend.leak_suspected
