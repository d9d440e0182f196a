"""The janitor: when to clean (time, memory pressure, an admin) and what a cleanup removes.

A cleanup expires connection attempts, pending messages and last-seen entries past their TTL,
trims per-player queues over their cap, closes connections past max_connection_age or idle
past idle_timeout, reconciles orphans (entries whose player has no connection) and, under
pressure, collects garbage and returns freed heap to the OS. It works in chunks and yields to
the event loop between them, so no sweep blocks the loop for long.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import datetime
import enum
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .alerts import STRUCTURE_NAMES, Alert, AlertRules, AlertTracker, MemoryLevels, Notifier
from .connection import Connection, ConnectionState
from .hub import Hub
from .lag import LoopLag
from .memory.history import HistoryPoint, MemoryHistory
from .memory.monitor import MIB, MemoryMonitor, MemorySample
from .protocol import CloseCode
from .settings import Settings

__all__ = ["CleanupReport", "CleanupStats", "Janitor", "Trigger"]

logger = logging.getLogger("mudgate.cleanup")

# Entries handled between two yields to the event loop.
CHUNK = 1000
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, float("inf"))


class Expiring(Protocol):
    """A bounded container whose entries expire in order (see bounded.py)."""

    def expire(self, limit: int | None = None) -> int: ...
    def expired(self) -> int: ...
    def due(self) -> bool: ...


class Trigger(enum.StrEnum):
    TIME = "time"
    MEMORY = "memory"
    FORCED = "forced"


@dataclass(slots=True)
class CleanupReport:
    """What one cleanup removed (or, in a dry run, would remove), and what it cost."""

    trigger: Trigger
    dry_run: bool
    started_at: str
    removed: dict[str, int]
    memory_before_mb: float
    memory_after_mb: float
    duration_seconds: float
    gc_collected: int = 0
    malloc_trimmed: bool = False

    @property
    def removed_total(self) -> int:
        return sum(self.removed.values())


@dataclass(slots=True)
class CleanupStats:
    """The janitor's running totals, as ``/monitoring/memory`` shows them; the ``last_*``
    figures are those of the newest of the ``recent`` reports."""

    memory_cleanups: int = 0
    time_cleanups: int = 0
    forced_cleanups: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    # Cleanup durations as a histogram (cumulative counts per upper bound, in seconds).
    duration_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys(DURATION_BUCKETS, 0)
    )
    duration_sum_seconds: float = 0.0
    recent: deque[CleanupReport] = field(default_factory=lambda: deque(maxlen=10))

    @property
    def cleanups_performed(self) -> int:
        return self.memory_cleanups + self.time_cleanups + self.forced_cleanups

    @property
    def last(self) -> CleanupReport | None:
        return self.recent[-1] if self.recent else None

    @property
    def last_cleanup(self) -> float | None:
        """When the last cleanup started, in seconds since the epoch."""
        if self.last is None:
            return None
        return datetime.datetime.fromisoformat(self.last.started_at).timestamp()

    @property
    def last_cleanup_iso(self) -> str | None:
        """When the last cleanup started, ISO-8601 UTC."""
        return self.last.started_at if self.last else None

    @property
    def last_trigger(self) -> str | None:
        return str(self.last.trigger) if self.last else None

    @property
    def last_duration_seconds(self) -> float:
        return self.last.duration_seconds if self.last else 0.0

    @property
    def last_memory_before_mb(self) -> float:
        return self.last.memory_before_mb if self.last else 0.0

    @property
    def last_memory_after_mb(self) -> float:
        return self.last.memory_after_mb if self.last else 0.0

    def record(self, report: CleanupReport) -> None:
        if report.trigger is Trigger.MEMORY:
            self.memory_cleanups += 1
        elif report.trigger is Trigger.TIME:
            self.time_cleanups += 1
        else:
            self.forced_cleanups += 1
        for name, count in report.removed.items():
            self.removed[name] = self.removed.get(name, 0) + count
        self.duration_sum_seconds += report.duration_seconds
        for bound in self.duration_buckets:
            if report.duration_seconds <= bound:
                self.duration_buckets[bound] += 1
        self.recent.append(report)


def _malloc_trim() -> bool:
    """Hand freed heap pages back to the OS (glibc only); True if it released any."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))


def _alert_fields(alert: Alert) -> dict[str, object]:
    return {
        "alert": str(alert),
        "level": str(alert.level),
        "code": alert.code,
        "value": alert.value,
        "threshold": alert.threshold,
    }


class Janitor:
    """Decides when to clean and cleans; one background task, started and stopped by the app."""

    def __init__(
        self,
        hub: Hub,
        monitor: MemoryMonitor,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        malloc_trim: Callable[[], bool] = _malloc_trim,
        notifier: Notifier | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        self.hub = hub
        self.monitor = monitor
        self.lag = lag or LoopLag(settings.loop_lag_threshold, clock=clock)
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.levels = MemoryLevels(settings, clock=clock)
        self.rules = AlertRules(settings)
        self.history = MemoryHistory(settings, clock=clock)
        self.tracker = AlertTracker()
        self.notifier = notifier or Notifier(settings, clock=clock, wall_clock=wall_clock)
        self._last_sample_at: float | None = None
        self.stats = CleanupStats()
        self.ineffective_cleanup = False
        self._malloc_trim = malloc_trim
        self._last_time_cleanup = clock()
        self._last_pressure_cleanup: float | None = None
        self._last_forced_cleanup: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # Lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mudgate-janitor")
        self.notifier.start()
        self.lag.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel("mudgate: shutting down")
            await asyncio.wait((self._task,))
            self._task = None
        await self.lag.stop()
        await self.notifier.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.check()
            except Exception:
                # A failing check must never stop the janitor, nor reach a player.
                logger.exception("janitor check failed")

    # Deciding

    def observe(self) -> MemorySample:
        """Read memory and update the level in force (and with it, load shedding)."""
        sample = self.monitor.read()
        self.levels.update(sample.percent)
        self.hub.set_shedding(self.levels.shedding)
        return sample

    def due(self, sample: MemorySample) -> Trigger | None:
        """The cleanup that is due now, if any."""
        now = self.clock()
        if sample.percent >= self.settings.memory_threshold * 100 and sample.error is None:
            cooldown = self.settings.pressure_cleanup_cooldown
            last = self._last_pressure_cleanup
            # A pressure cleanup that freed nothing raises an alert instead of running again.
            if (last is None or now - last >= cooldown) and not self.ineffective_cleanup:
                return Trigger.MEMORY
        else:
            self.ineffective_cleanup = False
        if now - self._last_time_cleanup >= self.settings.cleanup_interval:
            return Trigger.TIME
        return None

    async def check(self) -> CleanupReport | None:
        """One tick of the janitor: observe memory, record it, clean if due, alert."""
        sample = self.observe()
        # hub.stats() walks every connection: take it once a tick, again only after a cleanup.
        stats: dict[str, int] | None = self.hub.stats()
        now = self.clock()
        if self._last_sample_at is None or now - self._last_sample_at >= (
            self.settings.sample_interval
        ):
            self.record(sample, stats)
        trigger = self.due(sample)
        report = None
        if trigger is not None:
            report = await self.clean(trigger)
            stats = None
        self.update_alerts(stats)
        return report

    def record(self, sample: MemorySample, stats: dict[str, int] | None = None) -> None:
        """Add ``sample``, with the structures' sizes beside it, to the history."""
        self._last_sample_at = self.clock()
        stats = stats or self.hub.stats()
        self.history.record(
            HistoryPoint(
                at=self.wall_clock(),
                clock=self._last_sample_at,
                rss_mb=round(sample.rss_bytes / MIB, 3),
                percent=sample.percent,
                limit_mb=round(sample.limit_bytes / MIB, 3),
                connections=stats["total_connections"],
                structures={name: stats[name] for name in STRUCTURE_NAMES},
            )
        )

    def update_alerts(self, stats: dict[str, int] | None = None) -> None:
        """Evaluate the rules; log and notify what started and what resolved."""
        started, resolved = self.tracker.update(self.alerts(stats))
        for alert in started:
            logger.warning("alert started", extra=_alert_fields(alert))
        for alert in resolved:
            logger.info("alert resolved", extra=_alert_fields(alert))
        self.notifier.notify(started, resolved)

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

    def forced_cleanup_wait(self) -> float:
        """Seconds until an admin may force another cleanup (0: now)."""
        if self._last_forced_cleanup is None:
            return 0.0
        elapsed = self.clock() - self._last_forced_cleanup
        return max(0.0, self.settings.forced_cleanup_min_interval - elapsed)

    # Cleaning

    async def clean(self, trigger: Trigger, *, dry_run: bool = False) -> CleanupReport:
        """Run one cleanup (one at a time); a dry run counts what would go and removes nothing."""
        async with self._lock:
            return await self._clean(trigger, dry_run)

    async def _clean(self, trigger: Trigger, dry_run: bool) -> CleanupReport:
        started = self.clock()
        if trigger is Trigger.FORCED:  # dry runs too: they walk the same structures
            self._last_forced_cleanup = started
        started_at = datetime.datetime.fromtimestamp(self.wall_clock(), datetime.UTC).isoformat()
        before = self.monitor.read()
        removed = {
            "connection_attempts": await self._expire(self.hub.connection_attempts, dry_run),
            "message_rate_limits": await self._expire(self.hub.message_rates, dry_run),
            "last_seen": await self._expire(self.hub.last_seen, dry_run),
            "pending_messages": await self._sweep_pending(dry_run),
            "stale_connections": await self._close_stale(dry_run),
            "orphans": await self._reconcile(dry_run),
        }
        collected, trimmed = 0, False
        # Under pressure, and when an admin asks (after a flood, say): give memory back.
        if trigger is not Trigger.TIME and not dry_run:
            collected = gc.collect()
            # malloc_trim walks the whole heap: off the event loop.
            trimmed = await asyncio.to_thread(self._malloc_trim)
        after = self.monitor.read() if not dry_run else before
        report = CleanupReport(
            trigger=trigger,
            dry_run=dry_run,
            started_at=started_at,
            removed=removed,
            memory_before_mb=round(before.rss_bytes / MIB, 2),
            memory_after_mb=round(after.rss_bytes / MIB, 2),
            duration_seconds=round(self.clock() - started, 6),
            gc_collected=collected,
            malloc_trimmed=trimmed,
        )
        if not dry_run:
            self._finish(report)
        return report

    def _finish(self, report: CleanupReport) -> None:
        now = self.clock()
        self.stats.record(report)
        # Any full cleanup did the time-based one's work: its schedule restarts.
        self._last_time_cleanup = now
        if report.trigger is Trigger.MEMORY:
            self._last_pressure_cleanup = now
            self.ineffective_cleanup = report.removed_total == 0 and report.gc_collected == 0
        logger.info(
            "cleanup finished",
            extra={
                "trigger": str(report.trigger),
                "removed": {name: count for name, count in report.removed.items() if count},
                "duration_ms": round(report.duration_seconds * 1000, 3),
                "rss_before_mb": report.memory_before_mb,
                "rss_after_mb": report.memory_after_mb,
            },
        )

    async def _expire(self, container: Expiring, dry_run: bool) -> int:
        """Expire a bounded container in chunks: O(expired), yielding between chunks."""
        if dry_run:
            return container.expired()
        removed = 0
        while True:
            removed += container.expire(limit=CHUNK)
            if not container.due():
                return removed
            await asyncio.sleep(0)

    async def _sweep_pending(self, dry_run: bool) -> int:
        """Drop pending messages past their TTL. Every mailbox is capped at insert, so there
        is never a list to trim."""
        return await self._expire(self.hub.pending_messages, dry_run)

    def stale(self, conn: Connection, now: float) -> CloseCode | None:
        """Why ``conn`` should be closed now (recycled or idle), if it should."""
        age_limit = self.settings.max_connection_age
        if age_limit and now - conn.connected_at >= age_limit:
            return CloseCode.RECYCLED
        idle_limit = self.settings.idle_timeout
        if idle_limit and now - conn.last_received >= idle_limit:
            return CloseCode.IDLE
        return None

    def stale_connections(self) -> int:
        now = self.clock()
        return sum(1 for conn in self.hub.connections() if self.stale(conn, now) is not None)

    async def _close_stale(self, dry_run: bool) -> int:
        now = self.clock()
        closed = 0
        for index, conn in enumerate(list(self.hub.connections())):
            code = self.stale(conn, now)
            if code is not None and conn.state is ConnectionState.OPEN:
                closed += 1
                if not dry_run:
                    conn.close(code)
            if index % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
        return closed

    async def _reconcile(self, dry_run: bool) -> int:
        """Remove entries that outlived their player's connections; re-index lost ones."""
        # The index first: a connection missing from it would make its player look orphaned.
        fixed = self._reconcile_index(dry_run)
        await asyncio.sleep(0)
        fixed += self._reconcile_players(dry_run)
        await asyncio.sleep(0)
        for structure in (self.hub.room_occupants, self.hub.room_subscriptions):
            fixed += self._reconcile_members(structure, dry_run)
            await asyncio.sleep(0)
        return fixed

    def _reconcile_players(self, dry_run: bool) -> int:
        """Players "online" without a connection."""
        hub = self.hub
        orphans = [p for p in hub.online_players if p not in hub.player_websockets]
        if not dry_run:
            for player_id in orphans:
                hub.drop_player(player_id)
        return len(orphans)

    def _reconcile_members(self, structure: dict[str, set[str]], dry_run: bool) -> int:
        """Room and subscription entries whose player is offline; then empty sets."""
        online = self.hub.online_players
        fixed = 0
        for key, members in list(structure.items()):
            orphans = [p for p in members if p not in online]
            fixed += len(orphans)
            if not dry_run:
                members.difference_update(orphans)
                if not members:
                    del structure[key]
        return fixed

    def _reconcile_index(self, dry_run: bool) -> int:
        """Index entries whose connection is gone, and connections missing from the index."""
        hub = self.hub
        registered = {conn.id for conn in hub.connections()}
        fixed = 0
        for player_id, own in list(hub.player_websockets.items()):
            lost = [conn for conn in own if conn.id not in registered]
            fixed += len(lost)
            if not dry_run:
                for conn in lost:
                    own.remove(conn)
                if not own:
                    del hub.player_websockets[player_id]
        indexed = {conn.id for own in hub.player_websockets.values() for conn in own}
        unindexed = [conn for conn in hub.connections() if conn.id not in indexed]
        if not dry_run:
            for conn in unindexed:
                hub.player_websockets.setdefault(conn.player_id, []).append(conn)
        return fixed + len(unindexed)

    # Reporting

    def alerts(self, stats: dict[str, int] | None = None) -> list[Alert]:
        """The alerts active now (memory as of the last ``observe``; ``stats`` if fresh)."""
        return self.rules.evaluate(
            self.levels,
            stats or self.hub.stats(),
            stale_connections=self.stale_connections(),
            recent_slow_consumers=self.hub.recent_slow_consumers(
                self.settings.slow_consumer_alert_window
            ),
            ineffective_cleanup=self.ineffective_cleanup,
            trend=self.history.trend(),
            backplane_problem=self.hub.backplane.problem,
            loop_blocked=self.lag.blocked(),
        )
