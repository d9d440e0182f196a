"""Heavy diagnostics, on demand only: tracemalloc sessions and object counts by type.

tracemalloc costs about 3x CPU and 1.5x memory while on (DESIGN.md section 8), so a session
is admin-only, one at a time, and stops by itself after ``tracemalloc_max_seconds``.
``gc.get_objects()`` walks the whole heap, so counting objects is rate-limited.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import Settings

__all__ = ["AllocationSite", "Diagnostics", "DiagnosticsError"]

# Least time between two walks of the whole heap, seconds.
OBJECT_COUNT_INTERVAL = 10.0


class DiagnosticsError(Exception):
    """A diagnostic that cannot run now; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class AllocationSite:
    location: str  # file:line
    size_diff_bytes: int
    count_diff: int
    size_bytes: int
    count: int


class Diagnostics:
    """One tracemalloc session at a time, with a baseline to diff against."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._baseline: tracemalloc.Snapshot | None = None
        self._stopper: asyncio.TimerHandle | None = None
        self.started_at: float | None = None
        self._objects_counted_at: float | None = None

    @property
    def tracing(self) -> bool:
        return self._baseline is not None

    def start(self, frames: int = 1) -> None:
        """Start tracing and take the baseline; stops by itself after the configured time."""
        if self.tracing or tracemalloc.is_tracing():
            raise DiagnosticsError("tracemalloc is already running; stop it first")
        tracemalloc.start(frames)
        self._baseline = tracemalloc.take_snapshot()
        self.started_at = self._clock()
        self._stopper = asyncio.get_running_loop().call_later(
            self.settings.tracemalloc_max_seconds, self.stop
        )

    def stop(self) -> bool:
        """Stop tracing; False if it was not running."""
        if not self.tracing:
            return False
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        tracemalloc.stop()
        self._baseline = None
        self.started_at = None
        return True

    def top(self, limit: int = 20) -> list[AllocationSite]:
        """The allocation sites that grew most since the baseline."""
        if self._baseline is None:
            raise DiagnosticsError("tracemalloc is not running; start it first")
        ignore = (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        )
        snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
        baseline = self._baseline.filter_traces(ignore)
        sites = []
        for stat in snapshot.compare_to(baseline, "lineno")[:limit]:
            frame = stat.traceback[0]
            sites.append(
                AllocationSite(
                    f"{frame.filename}:{frame.lineno}",
                    stat.size_diff,
                    stat.count_diff,
                    stat.size,
                    stat.count,
                )
            )
        return sites

    def object_counts(self, limit: int = 30) -> list[tuple[str, int]]:
        """The most numerous object types on the heap; at most once per 10 s."""
        now = self._clock()
        last = self._objects_counted_at
        if last is not None and now - last < OBJECT_COUNT_INTERVAL:
            wait = OBJECT_COUNT_INTERVAL - (now - last)
            raise DiagnosticsError(f"objects were counted recently; try again in {wait:.0f} s")
        self._objects_counted_at = now
        counts = Counter(type(obj).__qualname__ for obj in gc.get_objects())
        return counts.most_common(limit)
