"""The health watch: the gateway's tick, and what it decides from the numbers it reads.

Every ``check_interval`` the tick reads memory, updates the level in force (and with it load
shedding), records the history, has the janitor clean when a cleanup is due, and updates the
alerts, which it logs and hands to the webhook notifier. ``HealthWatch`` owns every piece of
state that watching advances and advances it only on that tick; everything a GET endpoint asks
of it (``alerts``, ``health``) reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..cleanup import CleanupReport, Janitor
from ..hub import Hub, HubStats
from ..memory.history import HistoryPoint, MemoryHistory
from ..memory.monitor import MIB, MemoryMonitor, MemorySample
from ..settings import Settings
from ..tasks import BackgroundTask
from .alerts import Alert, AlertRules, AlertTracker
from .lag import LoopLag
from .levels import MemoryLevels
from .notify import Notifier

__all__ = ["HealthWatch"]

logger = logging.getLogger("mudgate.health")


def _alert_fields(alert: Alert) -> dict[str, object]:
    return {
        "alert": str(alert),
        "level": str(alert.level),
        "code": alert.code,
        "value": alert.value,
        "threshold": alert.threshold,
    }


class HealthWatch:
    """Reads memory, keeps the level in force (and with it, load shedding), the history and
    the alerts; runs the janitor when a cleanup is due; notifies webhooks; tells the cluster
    how this node is. Its tick is one background task, started and stopped by the gateway."""

    def __init__(
        self,
        hub: Hub,
        monitor: MemoryMonitor,
        janitor: Janitor,
        settings: Settings,
        *,
        levels: MemoryLevels,
        history: MemoryHistory,
        tracker: AlertTracker,
        notifier: Notifier,
        lag: LoopLag,
        game_problems: Callable[[], tuple[str | None, str | None]] = lambda: (None, None),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """The parts it advances (``levels``, ``history``, ``tracker``, ``notifier``,
        ``lag``) are the gateway's, which hands them to monitoring too: it reads them without
        going through the watch."""
        self.hub = hub
        self.monitor = monitor
        self.janitor = janitor
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.lag = lag
        self.game_problems = game_problems
        self.levels = levels
        self.rules = AlertRules(settings)
        self.history = history
        self.tracker = tracker
        self.notifier = notifier
        self._last_recorded_at: float | None = None
        self._tick = BackgroundTask("mudgate-health")

    # Lifecycle

    def start(self) -> None:
        self.notifier.start()
        self.lag.start()
        self._tick.start(self._run())

    async def stop(self) -> None:
        await self._tick.stop()
        await self.lag.stop()
        await self.notifier.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.check()
            except Exception:
                # A failing check must never stop the tick, nor reach a player.
                logger.exception("health check failed")

    # What the tick advances

    async def check(self) -> CleanupReport | None:
        """One tick: observe and record memory, clean if a cleanup is due, update the alerts."""
        sample = self.observe()
        # hub.stats() walks every connection: take it once a tick, again only after a cleanup.
        stats: HubStats | None = self.hub.stats()
        self.record(sample, stats)
        trigger = self.janitor.due(sample)
        report = None
        if trigger is not None:
            report = await self.janitor.clean(trigger)
            stats = None
        self.update_alerts(stats)
        return report

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

    def update_alerts(self, stats: HubStats | None = None) -> None:
        """Evaluate the rules; log and notify what started and what resolved."""
        started, resolved = self.tracker.update(self.alerts(stats))
        for alert in started:
            logger.warning("alert started", extra=_alert_fields(alert))
        for alert in resolved:
            logger.info("alert resolved", extra=_alert_fields(alert))
        self.notifier.notify(started, resolved)

    # What anyone may read

    def alerts(self, stats: HubStats | None = None) -> list[Alert]:
        """The alerts that hold now (a read: nothing is advanced or notified): memory as of
        the last ``observe``, the structures as of ``stats`` (taken now when not given)."""
        hub = self.hub
        return self.rules.evaluate(
            self.levels,
            (stats or hub.stats()).structures(),
            stale_connections=self.janitor.stale_connections(),
            recent_slow_consumers=hub.recent_slow_consumers(
                self.settings.slow_consumer_alert_window
            ),
            ineffective_cleanup=self.janitor.ineffective_cleanup,
            trend=self.history.trend(),
            backplane_problem=hub.backplane_problem,
            loop_blocked=self.lag.blocked(),
            game_problems=self.game_problems(),
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
