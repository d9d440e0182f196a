"""Alert rules and memory levels with hysteresis."""

from __future__ import annotations

from mudgate.health.alerts import Alert, AlertRules, AlertTracker
from mudgate.health.levels import Level, MemoryLevels
from mudgate.health.notify import Notifier

from ..conftest import FakeClock, make_settings


def levels(clock: FakeClock, hold: float = 0.0) -> MemoryLevels:
    return MemoryLevels(make_settings(memory_alert_hold=hold), clock=clock)


def test_memory_levels_fire_at_70_80_and_90(clock: FakeClock) -> None:
    memory = levels(clock)
    assert memory.update(69.9) is None
    assert memory.update(70.0) is Level.INFO
    assert memory.update(80.0) is Level.WARNING
    assert memory.update(90.0) is Level.CRITICAL


def test_a_level_clears_only_clearly_below_its_threshold(clock: FakeClock) -> None:
    memory = levels(clock)
    memory.update(91.0)
    assert memory.update(86.0) is Level.CRITICAL  # within the 5-point hysteresis
    assert memory.shedding
    assert memory.update(84.9) is Level.WARNING
    assert memory.shedding  # shedding stops only below the WARNING threshold
    assert memory.update(79.9) is Level.WARNING
    assert not memory.shedding
    assert memory.update(60.0) is None


def test_a_level_must_hold_before_it_fires(clock: FakeClock) -> None:
    memory = levels(clock, hold=10)
    assert memory.update(95.0) is None
    clock.advance(5)
    assert memory.update(95.0) is None
    clock.advance(5)
    assert memory.update(95.0) is Level.CRITICAL
    memory.update(10.0)
    assert memory.update(95.0) is None  # a dip restarts the hold


def test_alerts_render_in_the_operators_form() -> None:
    alert = Alert(Level.WARNING, "MEMORY_USAGE", "Memory usage at 81.3%", 81.3, 80.0)
    assert str(alert) == "WARNING: Memory usage at 81.3%"


def test_each_rule_produces_its_alert(clock: FakeClock) -> None:
    settings = make_settings(memory_alert_hold=0, large_structure_threshold=10)
    memory = MemoryLevels(settings, clock=clock)
    memory.update(81.26)
    alerts = AlertRules(settings).evaluate(
        memory,
        {"pending_messages": 11, "last_seen": 10},
        stale_connections=2,
        recent_slow_consumers=3,
        ineffective_cleanup=True,
    )
    assert [str(alert) for alert in alerts] == [
        "WARNING: Memory usage at 81.3%",
        "WARNING: Large data structure pending_messages with 11 entries",
        "WARNING: 2 connections past their age or idle limit",
        "WARNING: 3 slow consumers disconnected in the last 300 s",
        "WARNING: Pressure cleanup freed nothing; memory is held by live players or leaking",
    ]
    assert [alert.code for alert in alerts] == [
        "MEMORY_USAGE",
        "LARGE_STRUCTURE",
        "STALE_CONNECTIONS",
        "SLOW_CONSUMERS",
        "CLEANUP_INEFFECTIVE",
    ]
    assert (alerts[0].value, alerts[0].threshold) == (81.26, 80.0)


def test_no_alerts_when_all_is_well(clock: FakeClock) -> None:
    settings = make_settings()
    assert AlertRules(settings).evaluate(MemoryLevels(settings, clock=clock), {}) == []


def test_the_tracker_reports_starts_and_resolutions_once() -> None:
    tracker = AlertTracker()
    memory = Alert(Level.WARNING, "MEMORY_USAGE", "Memory usage at 81.0%", 81, 80, "WARNING")
    large = Alert(Level.WARNING, "LARGE_STRUCTURE", "big", 2000, 1000, "last_seen")
    assert tracker.update([memory, large]) == ([memory, large], [])
    assert tracker.update([memory, large]) == ([], [])
    assert tracker.update([memory]) == ([], [large])
    assert tracker.fired["LARGE_STRUCTURE"] == 1
    assert tracker.fired["LEAK_SUSPECTED"] == 0


def test_notifications_are_deduplicated_within_the_cooldown(clock: FakeClock) -> None:
    settings = make_settings(alert_webhooks=["http://127.0.0.1:1/hook"], alert_cooldown=300)
    notifier = Notifier(settings, clock=clock, wall_clock=lambda: 1_800_000_000.0)
    alert = Alert(Level.CRITICAL, "MEMORY_USAGE", "Memory usage at 91.0%", 91, 90, "CRITICAL")
    notifier.notify([alert], [])
    notifier.notify([], [alert])
    clock.advance(100)
    notifier.notify([alert], [])  # flapping back within the cool-down: not sent again
    queued = notifier._queue.drain()
    assert [(p["status"], p["code"]) for p in queued] == [
        ("firing", "MEMORY_USAGE"),
        ("resolved", "MEMORY_USAGE"),
    ]
    assert (
        queued[0]["text"]
        == f"[mudgate {settings.node_name}] CRITICAL: Memory usage at 91.0% (firing)"
    )
    assert queued[0]["timestamp"] == "2027-01-15T08:00:00+00:00"
    clock.advance(300)
    notifier.notify([alert], [])
    assert len(notifier._queue) == 1


def test_a_start_kept_quiet_by_the_cooldown_resolves_quietly(clock: FakeClock) -> None:
    settings = make_settings(alert_webhooks=["http://127.0.0.1:1/hook"], alert_cooldown=300)
    notifier = Notifier(settings, clock=clock)
    alert = Alert(Level.WARNING, "SLOW_CONSUMERS", "2 slow consumers", 2, 0)
    for _ in range(3):  # firing, resolved; then twice more within the cool-down
        notifier.notify([alert], [])
        clock.advance(10)
        notifier.notify([], [alert])
        clock.advance(10)
    statuses = [payload["status"] for payload in notifier._queue.drain()]
    assert statuses == ["firing", "resolved"]


def test_the_notification_queue_is_bounded(clock: FakeClock) -> None:
    settings = make_settings(alert_webhooks=["http://127.0.0.1:1/hook"], webhook_queue_size=3)
    notifier = Notifier(settings, clock=clock)
    alerts = [Alert(Level.WARNING, "LARGE_STRUCTURE", "x", 1, 0, str(i)) for i in range(5)]
    notifier.notify(alerts, [])
    assert len(notifier._queue) == 3
    assert notifier.dropped == 2


def test_without_webhooks_nothing_is_queued(clock: FakeClock) -> None:
    notifier = Notifier(make_settings(), clock=clock)
    notifier.notify([Alert(Level.INFO, "MEMORY_USAGE", "m", 70, 70, "INFO")], [])
    assert len(notifier._queue) == 0


def test_legacy_alert_text_reads_as_the_original_systems(clock: FakeClock) -> None:
    settings = make_settings(large_structure_threshold=1000, alert_text="legacy")
    alerts = AlertRules(settings).evaluate(
        MemoryLevels(settings, clock=clock),
        {"connection_attempts": 1500, "pending_messages": 1200, "last_seen": 1001},
        stale_connections=3,
    )
    assert [str(alert) for alert in alerts] == [
        "WARNING: Large data structure last_seen with 1001 entries",
        "WARNING: Large number of rate limit entries: 1500",
        "WARNING: Large number of pending message queues: 1200",
        "WARNING: 3 stale connections detected",
    ]
    # Codes and subjects do not change with the wording: only what people read does.
    assert [alert.key for alert in alerts] == [
        "LARGE_STRUCTURE:last_seen",
        "LARGE_STRUCTURE:connection_attempts",
        "LARGE_STRUCTURE:pending_messages",
        "STALE_CONNECTIONS:",
    ]
