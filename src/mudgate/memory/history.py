"""Memory over time: a bounded ring of samples, the trend, and when to suspect a leak.

The last ``history_seconds`` are kept at full resolution and the last 24 hours as one point per
minute (that minute's lowest RSS). The trend is a least-squares line through per-minute minimums
(the floor after garbage collection, not the peaks between), after a warm-up; growth that the
number of connections explains is not called a leak.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..settings import Settings

__all__ = ["HistoryPoint", "MemoryHistory", "Trend", "fit_line"]

MINUTE = 60.0
DAY = 24 * 60 * MINUTE


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: float  # wall-clock time, epoch seconds
    clock: float  # the injected monotonic clock, for the fit
    rss_mb: float
    percent: float
    limit_mb: float
    connections: int
    structures: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trend:
    """The fitted trend of memory over a window."""

    slope_mb_per_hour: float
    r_squared: float
    points: int
    window_seconds: float
    hours_to_limit: float | None
    connections_change: int
    leak_suspected: bool
    growing_structure: str | None
    explanation: str


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """The least-squares slope of ``ys`` over ``xs``, and r².

    r² is 0 where no line explains anything: fewer than two distinct ``xs`` (no slope either),
    or flat ``ys`` (slope 0, nothing varies to explain). The memory history and ``mudgate
    soak`` both read a trend through this one fit.
    """
    try:
        slope = statistics.linear_regression(xs, ys).slope
    except statistics.StatisticsError:
        return 0.0, 0.0
    try:
        r = statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # flat ys
        return slope, 0.0
    return slope, r * r


class MemoryHistory:
    """Samples at full resolution for ``history_seconds``, per minute for a day; both bounded."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.started_at = clock()
        self._fine: deque[HistoryPoint] = deque(
            maxlen=max(1, math.ceil(settings.history_seconds / settings.sample_interval))
        )
        self._coarse: deque[HistoryPoint] = deque(maxlen=int(DAY / MINUTE))
        self._minute: HistoryPoint | None = None  # the lowest point of the current minute

    def __len__(self) -> int:
        return len(self._fine) + len(self._coarse)

    def record(self, point: HistoryPoint) -> None:
        self._fine.append(point)
        current = self._minute
        if current is not None and point.clock // MINUTE != current.clock // MINUTE:
            self._coarse.append(current)
            current = None
        if current is None or point.rss_mb < current.rss_mb:
            self._minute = point

    def points(self, window_seconds: float | None = None) -> list[HistoryPoint]:
        """The points of the last ``window_seconds`` (all kept, without a window), oldest
        first: full resolution where it reaches, per minute before that."""
        window = self.settings.history_seconds if window_seconds is None else window_seconds
        since = self._clock() - window
        fine = [point for point in self._fine if point.clock >= since]
        if window <= self.settings.history_seconds or not fine:
            return fine
        first_fine = fine[0].clock
        coarse = [p for p in self._coarse if since <= p.clock < first_fine]
        return coarse + fine

    def _minimums(self, window_seconds: float) -> list[HistoryPoint]:
        """Each minute's lowest point, after the warm-up."""
        warm = self.started_at + self.settings.trend_warmup
        lowest: dict[float, HistoryPoint] = {}
        for point in self.points(window_seconds):
            if point.clock < warm:
                continue
            minute = point.clock // MINUTE
            if minute not in lowest or point.rss_mb < lowest[minute].rss_mb:
                lowest[minute] = point
        return [lowest[minute] for minute in sorted(lowest)]

    def trend(self, window_seconds: float | None = None) -> Trend:
        window = self.settings.history_seconds if window_seconds is None else window_seconds
        floor = self._minimums(window)
        if len(floor) < 3:
            return Trend(0.0, 0.0, len(floor), window, None, 0, False, None, "not enough data yet")
        hours = [(point.clock - floor[0].clock) / 3600 for point in floor]
        slope, r_squared = fit_line(hours, [point.rss_mb for point in floor])
        first, last = floor[0], floor[-1]
        connections_change = last.connections - first.connections
        hours_to_limit = (last.limit_mb - last.rss_mb) / slope if slope > 0 else None
        # Growth that more players explain is not a leak.
        connections_rising = last.connections > first.connections * 1.1 + 1
        steady = slope >= self.settings.leak_slope_mb_per_hour
        straight = r_squared >= self.settings.leak_min_r2
        growth = {
            name: last.structures.get(name, 0) - size
            for name, size in first.structures.items()
            if last.structures.get(name, 0) > size
        }
        growing = max(growth, key=lambda name: growth[name]) if growth else None
        suspected = steady and straight and not connections_rising
        if suspected:
            explanation = f"memory rises {slope:.1f} MiB/h steadily while connections do not"
            if growing is not None:
                explanation += f"; {growing} grew by {growth[growing]} entries"
        elif steady and connections_rising:
            explanation = "memory rises with the number of connections"
        elif steady:
            explanation = "memory rises, but not steadily enough to suspect a leak"
        else:
            explanation = "memory is flat"
        return Trend(
            round(slope, 3),
            round(r_squared, 4),
            len(floor),
            window,
            None if hours_to_limit is None else round(hours_to_limit, 2),
            connections_change,
            suspected,
            growing if suspected else None,
            explanation,
        )
