"""The janitor: when it cleans, what it removes, and what it reports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mudgate.backplane.topic import Topic
from mudgate.cleanup import CHUNK, Janitor, Trigger
from mudgate.health.alerts import AlertTracker
from mudgate.health.lag import LoopLag
from mudgate.health.levels import MemoryLevels
from mudgate.health.notify import Notifier
from mudgate.health.watch import HealthWatch
from mudgate.hub import Hub
from mudgate.memory.history import MemoryHistory
from mudgate.memory.monitor import MIB, MemorySample
from mudgate.protocol import CloseCode, Outgoing
from mudgate.settings import Settings

from .conftest import FakeClock, connect, make_settings, settle


class FakeMonitor:
    """A monitor whose reading the test sets (a 90 % reading cannot be made real here)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.percent = 10.0
        self.rss_mb = 100.0

    def read(self) -> MemorySample:
        return MemorySample(
            rss_bytes=int(self.rss_mb * MIB),
            vms_bytes=0,
            available_bytes=0,
            total_bytes=1000 * MIB,
            limit_bytes=1000 * MIB,
            limit_source="configured",
            percent=self.percent,
            taken_at=self.clock(),
        )


class Setup:
    def __init__(self, clock: FakeClock, **overrides: Any) -> None:
        self.settings: Settings = make_settings(memory_alert_hold=0, **overrides)
        self.hub = Hub(self.settings, clock=clock)
        self.monitor = FakeMonitor(clock)
        self.trims = 0

        def malloc_trim() -> bool:
            self.trims += 1
            return True

        wall_clock = lambda: 1_800_000_000.0  # noqa: E731
        self.janitor = Janitor(
            self.hub,
            self.monitor,  # type: ignore[arg-type]
            self.settings,
            clock=clock,
            wall_clock=wall_clock,
            malloc_trim=malloc_trim,
        )
        self.watch = HealthWatch(
            self.hub,
            self.monitor,  # type: ignore[arg-type]
            self.janitor,
            self.settings,
            levels=MemoryLevels(self.settings, clock=clock),
            history=MemoryHistory(self.settings, clock=clock),
            tracker=AlertTracker(),
            notifier=Notifier(self.settings, clock=clock, wall_clock=wall_clock),
            lag=LoopLag(self.settings.loop_lag_threshold, clock=clock),
            clock=clock,
            wall_clock=wall_clock,
        )


@pytest.fixture
async def setup(clock: FakeClock) -> Setup:
    setup = Setup(clock)
    await setup.hub.start()
    return setup


def test_the_defaults_follow_the_design() -> None:
    settings = Settings()
    assert settings.cleanup_interval == 300
    assert settings.memory_threshold == 0.8
    assert settings.pending_message_ttl == settings.connection_attempt_ttl == 3600
    assert settings.max_pending_messages == settings.max_rate_limit_entries == 1000
    assert settings.large_structure_threshold == 1000
    assert (
        settings.memory_info_percent,
        settings.memory_warning_percent,
        settings.memory_critical_percent,
    ) == (70, 80, 90)


async def test_nothing_is_due_before_the_interval(setup: Setup, clock: FakeClock) -> None:
    clock.advance(299)
    assert await setup.watch.check() is None


async def test_a_time_based_cleanup_runs_every_interval(setup: Setup, clock: FakeClock) -> None:
    clock.advance(300)
    report = await setup.watch.check()
    assert report is not None
    assert report.trigger is Trigger.TIME
    assert await setup.watch.check() is None
    clock.advance(300)
    assert await setup.watch.check() is not None
    assert setup.janitor.stats.time_cleanups == 2


async def test_pressure_cleans_with_a_cooldown(setup: Setup, clock: FakeClock) -> None:
    setup.hub.disconnect(connect(setup.hub, "alice"))
    clock.advance(3600)  # alice's last_seen entry is now stale: there is something to free
    setup.monitor.percent = 85.0
    report = await setup.watch.check()
    assert report is not None
    assert report.trigger is Trigger.MEMORY
    assert report.malloc_trimmed
    assert setup.trims == 1
    clock.advance(30)
    assert await setup.watch.check() is None  # cooling down
    clock.advance(30)
    report = await setup.watch.check()
    assert report is not None
    assert report.trigger is Trigger.MEMORY
    assert setup.janitor.stats.memory_cleanups == 2


async def test_a_pressure_cleanup_that_frees_nothing_alerts_instead_of_storming(
    setup: Setup, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gc.collect", lambda: 0)
    setup.monitor.percent = 85.0
    assert await setup.watch.check() is not None
    assert setup.janitor.ineffective_cleanup
    clock.advance(120)
    assert await setup.watch.check() is None  # no rerun while it would free nothing
    assert "CLEANUP_INEFFECTIVE" in [alert.code for alert in setup.watch.alerts()]
    setup.monitor.percent = 50.0  # pressure gone: the alert clears
    await setup.watch.check()
    assert not setup.janitor.ineffective_cleanup


async def test_critical_memory_sheds_load_until_below_warning(setup: Setup) -> None:
    setup.monitor.percent = 92.0
    setup.watch.observe()
    refusal = setup.hub.admit("alice", "10.0.0.1")
    assert refusal is not None
    assert (refusal.code, refusal.reason) == (CloseCode.TRY_AGAIN_LATER, "memory pressure")
    setup.monitor.percent = 82.0
    setup.watch.observe()
    assert setup.hub.shedding
    setup.monitor.percent = 79.0
    setup.watch.observe()
    assert setup.hub.admit("alice", "10.0.0.1") is None


async def test_old_attempts_and_pending_messages_expire_while_recent_ones_stay(
    setup: Setup, clock: FakeClock
) -> None:
    hub = setup.hub
    for name in ("old", "recent"):
        hub.disconnect(connect(hub, name))
    hub.admit("old", "10.0.0.1")
    hub.send("old", hub.event("tell", text="old"))
    hub.send("recent", hub.event("tell", text="old too"))
    clock.advance(2000)
    new = hub.event("tell", text="new")
    hub.send("recent", new)
    hub.admit("recent", "10.0.0.2")
    clock.advance(2000)  # 4000 s: the first message and attempts are past 3600 s
    report = await setup.janitor.clean(Trigger.FORCED)
    assert report.removed["pending_messages"] == 2
    assert report.removed["connection_attempts"] == 2  # ip:10.0.0.1 and player:old
    assert "old" not in hub.absentees.pending_messages
    assert [message.data for message in hub.absentees.pending_messages.take("recent")] == [new.data]
    assert hub.admission.connection_attempts.recent("player:recent") == 1


async def test_no_pending_list_ever_outgrows_its_cap(setup: Setup) -> None:
    hub = setup.hub
    hub.disconnect(connect(hub, "alice"))
    for i in range(1500):
        hub.send("alice", Outgoing("tell", str(i).encode()))
    assert hub.absentees.pending_messages.count("alice") == 1000
    assert hub.absentees.pending_messages.refusals == 500
    report = await setup.janitor.clean(Trigger.FORCED)
    assert report.removed["pending_messages"] == 0
    conn = connect(hub, "alice")
    await settle()
    # The first 1000 kept: past the cap, new ones are refused, not the old ones pushed out.
    assert [m.data for m in conn.written[1:3]] == [b"0", b"1"]
    assert conn.written[-1].data == b"999"


async def test_connections_past_their_age_or_idle_are_closed(clock: FakeClock) -> None:
    setup = Setup(clock, max_connection_age=100, idle_timeout=50)
    await setup.hub.start()
    old = connect(setup.hub, "old")
    clock.advance(60)
    idle = connect(setup.hub, "idle")
    busy = connect(setup.hub, "busy")
    clock.advance(45)  # old: 105 s; idle and busy: 45 s old
    busy.received()
    assert setup.janitor.stale_connections() == 1
    clock.advance(10)  # idle: 55 s without traffic; busy heard from 10 s ago
    report = await setup.janitor.clean(Trigger.FORCED)
    assert report.removed["stale_connections"] == 2
    await settle()
    assert old.closed_with == (CloseCode.RECYCLED, "recycled")
    assert idle.closed_with == (CloseCode.IDLE, "idle")
    assert busy.closed_with is None


async def test_orphans_are_reconciled(setup: Setup) -> None:
    hub = setup.hub
    alice = connect(hub, "alice")
    bob = connect(hub, "bob")
    # Corrupt the structures the way a bug would.
    del hub.registry._by_player["bob"]  # bob's connection missing from the index
    hub.topics._occupants.setdefault("ghost-room", set()).add("ghost")
    hub.topics._listeners.setdefault(Topic("channel:ooc"), set()).add("ghost")
    hub.registry._websockets.pop(alice.id)  # alice's index entry now points at nothing
    hub.registry._opened_at.pop(alice.id)
    report = await setup.janitor.clean(Trigger.FORCED)
    # bob re-indexed; alice's dead entry dropped and, with no connection left, she goes offline;
    # the ghost's room and subscription entries go.
    assert report.removed["orphans"] == 5
    assert hub.registry.player_connections == {"bob": [bob]}
    assert list(hub.registry.players) == ["bob"]
    assert hub.topics.occupants == {"lobby": {"bob"}}
    assert hub.topics.topic_listeners == {"room:lobby": {"bob"}}
    assert (await setup.janitor.clean(Trigger.FORCED)).removed["orphans"] == 0


async def test_a_dry_run_reports_and_removes_nothing(setup: Setup, clock: FakeClock) -> None:
    hub = setup.hub
    hub.disconnect(connect(hub, "alice"))
    hub.send("alice", hub.event("tell", text="x"))
    clock.advance(3600)
    report = await setup.janitor.clean(Trigger.FORCED, dry_run=True)
    assert report.dry_run
    assert report.removed["pending_messages"] == 1
    assert report.removed["last_seen"] == 1
    assert len(hub.absentees.pending_messages) == 1
    assert setup.janitor.stats.cleanups_performed == 0


async def test_forced_cleanups_update_the_stats(setup: Setup, clock: FakeClock) -> None:
    setup.monitor.rss_mb = 120.0
    report = await setup.janitor.clean(Trigger.FORCED)
    stats = setup.janitor.stats
    assert (stats.cleanups_performed, stats.forced_cleanups, stats.last_trigger) == (1, 1, "forced")
    assert stats.last_cleanup_iso == report.started_at == "2027-01-15T08:00:00+00:00"
    assert stats.last_cleanup == 1_800_000_000.0  # the same, in seconds since the epoch
    assert stats.last_memory_before_mb == 120.0
    assert set(stats.removed) == {
        "connection_attempts",
        "message_rate_limits",
        "last_seen",
        "pending_messages",
        "room_history",
        "left_rooms",
        "stale_connections",
        "orphans",
    }
    assert setup.janitor.forced_cleanup_wait() == 10.0
    clock.advance(10)
    assert setup.janitor.forced_cleanup_wait() == 0.0


async def test_large_sweeps_run_in_chunks(setup: Setup, clock: FakeClock) -> None:
    hub = setup.hub
    for i in range(3 * CHUNK + 5):
        hub.admission.connection_attempts.hit(f"ip:{i}")
    clock.advance(10_000)
    report = await setup.janitor.clean(Trigger.FORCED)
    assert report.removed["connection_attempts"] == 3 * CHUNK + 5


async def test_the_health_tick_runs_and_stops_with_its_task(clock: FakeClock) -> None:
    setup = Setup(clock, check_interval=0.001)
    setup.watch.start()
    setup.monitor.percent = 95.0
    for _ in range(500):
        if setup.hub.shedding:
            break
        await asyncio.sleep(0.001)
    await setup.watch.stop()
    assert setup.hub.shedding


async def test_a_forced_cleanup_gives_memory_back_but_a_dry_run_does_not(setup: Setup) -> None:
    dry = await setup.janitor.clean(Trigger.FORCED, dry_run=True)
    assert not dry.malloc_trimmed
    assert setup.trims == 0
    report = await setup.janitor.clean(Trigger.FORCED)
    assert report.malloc_trimmed  # after a flood, RSS comes down when an admin asks
    assert setup.trims == 1
    time_report = await setup.janitor.clean(Trigger.TIME)
    assert not time_report.malloc_trimmed  # the routine sweep leaves the heap alone
