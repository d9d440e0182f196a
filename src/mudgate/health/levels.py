"""The memory level in force (INFO, WARNING, CRITICAL), with hysteresis, and with it the
decision to shed load."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from ..settings import Settings

__all__ = ["Level", "MemoryLevels"]


class Level(enum.IntEnum):
    """Alert levels, ordered so that ``max`` gives the most severe."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name


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
