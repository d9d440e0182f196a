"""Alert rules: memory levels (with hysteresis), runaway structures, stale connections,
slow consumers and cleanups that free nothing.

Each alert renders as the operators' string form, ``"WARNING: Memory usage at 81.3%"``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .settings import Settings

__all__ = ["STRUCTURE_NAMES", "Alert", "AlertRules", "Level", "MemoryLevels"]

# The hub structures a LARGE_STRUCTURE alert watches (DESIGN.md section 3).
STRUCTURE_NAMES = (
    "active_websockets",
    "active_sse",
    "player_websockets",
    "connection_timestamps",
    "online_players",
    "room_occupants",
    "room_subscriptions",
    "last_seen",
    "connection_attempts",
    "pending_messages",
)


class Level(enum.IntEnum):
    """Alert levels, ordered so that ``max`` gives the most severe."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Alert:
    level: Level
    code: str
    message: str
    value: float
    threshold: float

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


class MemoryLevels:
    """The memory level in force, with hysteresis so a reading near a threshold does not flap.

    A level is entered once the percent has stayed at or over its threshold for ``hold``
    seconds, and left once the percent falls ``hysteresis`` points below it. While CRITICAL,
    the gateway sheds load; shedding stops only below the WARNING threshold.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.thresholds = {
            Level.INFO: settings.memory_info_percent,
            Level.WARNING: settings.memory_warning_percent,
            Level.CRITICAL: settings.memory_critical_percent,
        }
        self.hysteresis = settings.memory_alert_hysteresis
        self.hold_seconds = settings.memory_alert_hold
        self._clock = clock
        self.level: Level | None = None
        self.shedding = False
        self.percent = 0.0
        self._over_since: dict[Level, float] = {}

    def update(self, percent: float) -> Level | None:
        """Feed a reading; returns the level now in force (None below INFO)."""
        now = self._clock()
        self.percent = percent
        for candidate, threshold in self.thresholds.items():
            if percent >= threshold:
                self._over_since.setdefault(candidate, now)
            else:
                self._over_since.pop(candidate, None)
        level = self.level
        # Leave levels once clearly below them.
        while level is not None and percent < self.thresholds[level] - self.hysteresis:
            level = Level(level - 1) if level > Level.INFO else None
        # Enter the highest level held long enough.
        for candidate in sorted(self.thresholds, reverse=True):
            since = self._over_since.get(candidate)
            if since is not None and now - since >= self.hold_seconds:
                if level is None or candidate > level:
                    level = candidate
                break
        self.level = level
        if level is Level.CRITICAL:
            self.shedding = True
        elif percent < self.thresholds[Level.WARNING]:
            self.shedding = False
        return level


class AlertRules:
    """Turns the gateway's current state into the list of active alerts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def evaluate(
        self,
        levels: MemoryLevels,
        structures: Mapping[str, int],
        *,
        stale_connections: int = 0,
        recent_slow_consumers: int = 0,
        ineffective_cleanup: bool = False,
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
                        f"Large data structure {name} with {size} entries",
                        size,
                        limit,
                    )
                )
        if stale_connections:
            alerts.append(
                Alert(
                    Level.WARNING,
                    "STALE_CONNECTIONS",
                    f"{stale_connections} connections past their age or idle limit",
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
        return alerts
