"""Alert rules: memory levels (with hysteresis), runaway structures, stale connections,
slow consumers and cleanups that free nothing.

Each alert renders as the operators' string form, ``"WARNING: Memory usage at 81.3%"``.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from .bounded import BoundedQueue, TTLMap
from .hub.stats import STRUCTURE_NAMES
from .lag import Block
from .memory.history import Trend
from .settings import Settings

__all__ = [
    "Alert",
    "AlertRules",
    "AlertTracker",
    "Level",
    "MemoryLevels",
    "Notifier",
]

logger = logging.getLogger("mudgate.alerts")


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
    subject: str = ""  # what the alert is about, when a code can fire for several things

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"

    @property
    def key(self) -> str:
        """Identifies one alert across evaluations: its code and its subject."""
        return f"{self.code}:{self.subject}"


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


class Notifier:
    """Sends alert notifications to webhooks, in the background, from a bounded queue.

    Each alert's start and resolution is one JSON POST to every URL in ``alert_webhooks``
    (with a ``text`` field, so a Slack incoming webhook shows it). An alert that starts again
    within ``alert_cooldown`` of its last notification is not sent again, nor is its
    resolution. A POST that fails is retried with backoff; a queue that fills drops its oldest
    notification. Nothing here can slow a player down or grow without bound.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        retry_delay_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.urls = list(settings.alert_webhooks)
        self._clock = clock
        self._wall_clock = wall_clock
        self._retry_delay = retry_delay_seconds
        self._queue: BoundedQueue[dict[str, object]] = BoundedQueue(settings.webhook_queue_size)
        self._wakeup = asyncio.Event()
        # Alert key -> when its start was last notified; bounded like everything else.
        self._notified: TTLMap[str, float] = TTLMap(1000)
        # The alerts active now whose start was notified: only theirs is a resolution to send.
        self._announced: TTLMap[str, bool] = TTLMap(1000)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    @property
    def dropped(self) -> int:
        return self._queue.evictions

    def notify(self, started: list[Alert], resolved: list[Alert]) -> None:
        """Queue notifications for alerts that started or resolved; never waits."""
        if not self.urls:
            return
        now = self._clock()
        for alert in started:
            last = self._notified.get(alert.key)
            if last is not None and now - last < self.settings.alert_cooldown:
                continue
            self._notified.set(alert.key, now)
            self._announced.set(alert.key, True)
            self._queue.append(self._payload(alert, "firing"))
        for alert in resolved:
            # A start that the cool-down kept quiet resolves quietly too.
            if self._announced.pop(alert.key):
                self._queue.append(self._payload(alert, "resolved"))
        if len(self._queue):
            self._wakeup.set()

    def _payload(self, alert: Alert, status: str) -> dict[str, object]:
        node = self.settings.node_name
        stamp = datetime.datetime.fromtimestamp(self._wall_clock(), datetime.UTC).isoformat()
        return {
            "status": status,
            "level": str(alert.level),
            "code": alert.code,
            "message": alert.message,
            "value": alert.value,
            "threshold": alert.threshold,
            "node": node,
            "timestamp": stamp,
            "text": f"[mudgate {node}] {alert} ({status})",
        }

    def start(self) -> None:
        if self.urls:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="mudgate-notifier"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel("mudgate: shutting down")
            await asyncio.wait((self._task,))
            self._task = None

    async def _run(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                for payload in self._queue.drain():
                    for url in self.urls:
                        await self._post(client, url, payload)

    async def _post(self, client: httpx.AsyncClient, url: str, payload: dict[str, object]) -> None:
        for attempt in range(self.settings.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
            try:
                response = await client.post(url, json=payload)
            except httpx.HTTPError as error:
                problem = repr(error)
            else:
                if response.is_success:
                    self.sent += 1
                    return
                problem = f"HTTP {response.status_code}"
            logger.warning("webhook %s failed (attempt %d): %s", url, attempt + 1, problem)
        self.failed += 1
