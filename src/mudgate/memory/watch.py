"""Watching memory: sample → levels → shedding, the history, alerts → notifier, node health.

``MemoryWatch`` owns every piece of state that watching advances (the level in force with its
hysteresis, the history, the active alerts, the notifier's queue) and advances it only in
``observe``, ``record`` and ``update_alerts``, which the janitor's tick calls. Everything a
GET endpoint asks of it (``alerts``, ``health``, ``last``) reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..alerts import Alert, AlertRules, AlertTracker, MemoryLevels, Notifier
from ..connection import Connection
from ..lag import LoopLag
from ..protocol import CloseCode
from ..settings import Settings
from .history import HistoryPoint, MemoryHistory
from .monitor import MIB, MemoryMonitor, MemorySample

if TYPE_CHECKING:
    from ..hub import Hub, HubStats

__all__ = ["MemoryWatch", "count_stale", "stale_reason"]

logger = logging.getLogger("mudgate.cleanup")


def stale_reason(conn: Connection, now: float, settings: Settings) -> CloseCode | None:
    """Why ``conn`` should be closed now (past max_connection_age, or idle past
    idle_timeout), if it should."""
    age_limit = settings.max_connection_age
    if age_limit and now - conn.connected_at >= age_limit:
        return CloseCode.RECYCLED
    idle_limit = settings.idle_timeout
    if idle_limit and now - conn.last_received >= idle_limit:
        return CloseCode.IDLE
    return None


def count_stale(connections: Iterable[Connection], now: float, settings: Settings) -> int:
    return sum(1 for conn in connections if stale_reason(conn, now, settings) is not None)


def _alert_fields(alert: Alert) -> dict[str, object]:
    return {
        "alert": str(alert),
        "level": str(alert.level),
        "code": alert.code,
        "value": alert.value,
        "threshold": alert.threshold,
    }


class MemoryWatch:
    """Reads memory, keeps the level in force (and with it, load shedding), the history and
    the alerts; notifies webhooks; tells the cluster how this node is."""

    def __init__(
        self,
        hub: Hub,
        monitor: MemoryMonitor,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        self.hub = hub
        self.monitor = monitor
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.lag = lag or LoopLag(settings.loop_lag_threshold, clock=clock)
        self.levels = MemoryLevels(settings, clock=clock)
        self.rules = AlertRules(settings)
        self.history = MemoryHistory(settings, clock=clock)
        self.tracker = AlertTracker()
        self.notifier = notifier or Notifier(settings, clock=clock, wall_clock=wall_clock)
        self._last_recorded_at: float | None = None

    def start(self) -> None:
        self.notifier.start()
        self.lag.start()

    async def stop(self) -> None:
        await self.lag.stop()
        await self.notifier.stop()

    # What the janitor's tick advances

    def observe(self) -> MemorySample:
        """Read memory and update the level in force, and with it load shedding."""
        sample = self.monitor.read()
        self.levels.update(sample.percent)
        self.hub.set_shedding(self.levels.shedding)
        return sample

    def record(self, sample: MemorySample, stats: HubStats | None = None) -> bool:
        """Add ``sample`` to the history, with the structures' sizes beside it, if
        ``sample_interval`` has passed since the last point; whether it was added."""
        now = self.clock()
        if self._last_recorded_at is not None and (
            now - self._last_recorded_at < self.settings.sample_interval
        ):
            return False
        self._last_recorded_at = now
        stats = stats or self.hub.stats()
        self.history.record(
            HistoryPoint(
                at=self.wall_clock(),
                clock=now,
                rss_mb=round(sample.rss_bytes / MIB, 3),
                percent=sample.percent,
                limit_mb=round(sample.limit_bytes / MIB, 3),
                connections=stats.total_connections,
                structures=stats.structures(),
            )
        )
        return True

    def update_alerts(self, stats: HubStats | None = None, *, ineffective_cleanup: bool) -> None:
        """Evaluate the rules; log and notify what started and what resolved."""
        started, resolved = self.tracker.update(
            self.alerts(stats, ineffective_cleanup=ineffective_cleanup)
        )
        for alert in started:
            logger.warning("alert started", extra=_alert_fields(alert))
        for alert in resolved:
            logger.info("alert resolved", extra=_alert_fields(alert))
        self.notifier.notify(started, resolved)

    # What anyone may read

    def alerts(self, stats: HubStats | None = None, *, ineffective_cleanup: bool) -> list[Alert]:
        """The alerts that hold now: memory as of the last ``observe``, the structures as of
        ``stats`` (taken now when not given)."""
        hub = self.hub
        return self.rules.evaluate(
            self.levels,
            (stats or hub.stats()).structures(),
            stale_connections=count_stale(hub.connections(), self.clock(), self.settings),
            recent_slow_consumers=hub.registry.recent_slow_consumers(
                self.settings.slow_consumer_alert_window
            ),
            ineffective_cleanup=ineffective_cleanup,
            trend=self.history.trend(),
            backplane_problem=hub.backplane.problem,
            loop_blocked=self.lag.blocked(),
        )

    def health(self) -> dict[str, object]:
        """What the cluster view shows of this node: the last memory reading and the alerts
        active now (read when the node renews its lease)."""
        sample = self.monitor.last
        return {
            "memory": None
            if sample is None
            else {
                "rss_mb": round(sample.rss_bytes / MIB, 1),
                "percent": round(sample.percent, 1),
                "limit_mb": round(sample.limit_bytes / MIB, 1),
            },
            "alerts": [str(alert) for alert in self.tracker.active.values()],
            "shedding": self.hub.shedding,
        }
