"""The janitor: when to clean (time, memory pressure, an admin) and what a cleanup removes.

A cleanup expires connection attempts, message buckets, pending messages and last-seen entries
past their TTL (every per-player queue is capped as it is filled, so there is never one to
trim), closes connections past max_connection_age or idle past idle_timeout, reconciles
orphans (entries whose player has no connection) and, under pressure, collects garbage and
returns freed heap to the OS. It works in chunks and yields to the event loop between them, so
no sweep blocks the loop for long. The health watch's tick asks it when a cleanup is due.
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

from .bounded import Expiring
from .connection import Connection, ConnectionState
from .hub import Hub
from .memory.monitor import MIB, MemoryMonitor, MemorySample
from .protocol import CloseCode
from .settings import Settings

__all__ = ["CleanupReport", "CleanupStats", "Janitor", "Trigger", "stale_reason"]

logger = logging.getLogger("mudgate.cleanup")

# Entries handled between two yields to the event loop.
CHUNK = 1000
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, float("inf"))


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


class Janitor:
    """Decides when to clean (``due``) and cleans (``clean``).

    The janitor owns only its schedule and its totals; what a cleanup removes, each
    structure's owner removes (mudgate.bounded's ``expire``, the hub's ``repair``, a
    connection's ``close``). ``monitor`` gives the readings before and after a cleanup.
    """

    def __init__(
        self,
        hub: Hub,
        monitor: MemoryMonitor,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        malloc_trim: Callable[[], bool] = _malloc_trim,
    ) -> None:
        self.hub = hub
        self.monitor = monitor
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = CleanupStats()
        self.ineffective_cleanup = False
        self._malloc_trim = malloc_trim
        self._last_time_cleanup = clock()
        self._last_pressure_cleanup: float | None = None
        self._last_forced_cleanup: float | None = None
        self._lock = asyncio.Lock()

    # Deciding

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
            name: await self._expire(container, dry_run)
            for name, container in self.hub.expiring().items()
        }
        removed["stale_connections"] = await self._close_stale(dry_run)
        removed["orphans"] = self.hub.repair(dry_run)
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

    def stale_connections(self) -> int:
        """Connections a cleanup would close now (past their age or idle limit)."""
        now = self.clock()
        return sum(1 for conn in self.hub.connections() if stale_reason(conn, now, self.settings))

    async def _close_stale(self, dry_run: bool) -> int:
        now = self.clock()
        closed = 0
        for index, conn in enumerate(list(self.hub.connections())):
            code = stale_reason(conn, now, self.settings)
            if code is not None and conn.state is ConnectionState.OPEN:
                closed += 1
                if not dry_run:
                    conn.close(code)
            if index % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
        return closed
