"""Alert rules and memory levels with hysteresis."""

from __future__ import annotations

from mudgate.alerts import Alert, AlertRules, Level, MemoryLevels

from .conftest import FakeClock, make_settings


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
