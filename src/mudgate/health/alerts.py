"""Alert rules: memory levels, runaway structures, stale connections, slow consumers,
cleanups that free nothing, an upward trend, a blocked event loop, an unreachable backplane.

Each alert renders as the operators' string form, ``"WARNING: Memory usage at 81.3%"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..hub.stats import STRUCTURE_NAMES
from ..memory.history import Trend
from ..settings import Settings
from .lag import Block
from .levels import Level, MemoryLevels

__all__ = ["ALERT_CODES", "Alert", "AlertRules", "AlertTracker"]


@dataclass(frozen=True, slots=True)
class Alert:
    level: Level
    code: str
    message: str
    value: float
    threshold: float
    subject: str = ""  # what the alert is about, when a code can fire for several things

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"

    @property
    def key(self) -> str:
        """Identifies one alert across evaluations: its code and its subject."""
        return f"{self.code}:{self.subject}"


# The original system's wording for the structures it had (MUDGATE_ALERT_TEXT=legacy).
LEGACY_STRUCTURE_TEXTS = {
    "connection_attempts": "Large number of rate limit entries: {size}",
    "message_rate_limits": "Large number of rate limit entries: {size}",
    "pending_messages": "Large number of pending message queues: {size}",
}


class AlertRules:
    """Turns the gateway's current state into the list of active alerts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _structure_text(self, name: str, size: int) -> str:
        legacy = LEGACY_STRUCTURE_TEXTS.get(name)
        if legacy is not None and self.settings.alert_text == "legacy":
            return legacy.format(size=size)
        return f"Large data structure {name} with {size} entries"

    def evaluate(
        self,
        levels: MemoryLevels,
        structures: Mapping[str, int],
        *,
        stale_connections: int = 0,
        recent_slow_consumers: int = 0,
        ineffective_cleanup: bool = False,
        trend: Trend | None = None,
        backplane_problem: str | None = None,
        loop_blocked: Block | None = None,
        game_problems: tuple[str | None, str | None] = (None, None),
    ) -> list[Alert]:
        alerts = []
        if levels.level is not None:
            alerts.append(
                Alert(
                    levels.level,
                    "MEMORY_USAGE",
                    f"Memory usage at {levels.percent:.1f}%",
                    levels.percent,
                    levels.thresholds[levels.level],
                    str(levels.level),
                )
            )
        limit = self.settings.large_structure_threshold
        for name in STRUCTURE_NAMES:
            size = structures.get(name, 0)
            if size > limit:
                alerts.append(
                    Alert(
                        Level.WARNING,
                        "LARGE_STRUCTURE",
                        self._structure_text(name, size),
                        size,
                        limit,
                        name,
                    )
                )
        if stale_connections:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "STALE_CONNECTIONS",
                    f"{stale_connections} stale connections detected"
                    if self.settings.alert_text == "legacy"
                    else f"{stale_connections} connections past their age or idle limit",
                    stale_connections,
                    0,
                )
            )
        if recent_slow_consumers:
            window = self.settings.slow_consumer_alert_window
            alerts.append(
                Alert(
                    Level.WARNING,
                    "SLOW_CONSUMERS",
                    f"{recent_slow_consumers} slow consumers disconnected in the last "
                    f"{window:.0f} s",
                    recent_slow_consumers,
                    0,
                )
            )
        if ineffective_cleanup:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "CLEANUP_INEFFECTIVE",
                    "Pressure cleanup freed nothing; memory is held by live players or leaking",
                    levels.percent,
                    self.settings.memory_threshold * 100,
                )
            )
        if trend is not None and trend.leak_suspected:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "LEAK_SUSPECTED",
                    f"Leak suspected: {trend.explanation}",
                    trend.slope_mb_per_hour,
                    self.settings.leak_slope_mb_per_hour,
                    trend.growing_structure or "",
                )
            )
        if loop_blocked is not None:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "EVENT_LOOP_BLOCKED",
                    f"Event loop blocked for {loop_blocked.seconds:.2f} s, every player "
                    f"waiting: {loop_blocked.running}",
                    round(loop_blocked.seconds, 3),
                    self.settings.loop_lag_threshold,
                )
            )
        if backplane_problem is not None:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "BACKPLANE_UNAVAILABLE",
                    f"Backplane unavailable: {backplane_problem}",
                    1,
                    0,
                )
            )
        unavailable, reload_failed = game_problems
        if unavailable is not None:
            alerts.append(
                Alert(
                    Level.CRITICAL,
                    "GAME_UNAVAILABLE",
                    f"Game unavailable, players' commands are refused: {unavailable}",
                    1,
                    0,
                )
            )
        if reload_failed is not None:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "GAME_RELOAD_FAILED",
                    f"A new game process failed to start, the running one carries on: "
                    f"{reload_failed}",
                    1,
                    0,
                )
            )
        return alerts


# Every code a rule can raise, so /metrics shows each from the start, at 0.
ALERT_CODES = (
    "MEMORY_USAGE",
    "LARGE_STRUCTURE",
    "STALE_CONNECTIONS",
    "SLOW_CONSUMERS",
    "CLEANUP_INEFFECTIVE",
    "LEAK_SUSPECTED",
    "EVENT_LOOP_BLOCKED",
    "BACKPLANE_UNAVAILABLE",
    "GAME_UNAVAILABLE",
    "GAME_RELOAD_FAILED",
)


class AlertTracker:
    """Which alerts are active, which started or resolved at the last update, and how many
    have fired per code (for /metrics)."""

    def __init__(self) -> None:
        self.active: dict[str, Alert] = {}
        self.fired: dict[str, int] = dict.fromkeys(ALERT_CODES, 0)

    def update(self, alerts: list[Alert]) -> tuple[list[Alert], list[Alert]]:
        """Record the alerts active now; returns (started, resolved)."""
        current = {alert.key: alert for alert in alerts}
        started = [alert for key, alert in current.items() if key not in self.active]
        resolved = [alert for key, alert in self.active.items() if key not in current]
        for alert in started:
            self.fired[alert.code] = self.fired.get(alert.code, 0) + 1
        self.active = current
        return started, resolved
