"""How many times each command op ran, how often it failed (by error code) and how long it
took: what ``/metrics`` exports per op and what the dashboard's slowest commands are made of.

Bounded by construction: a client chooses the op it sends, so only ops the registry knows get a
row of their own (at most ``max_ops``), and everything else is counted under ``UNKNOWN``; error
codes are ``ErrorCode``'s. At most ``(max_ops + 1) x (len(ErrorCode) + 1)`` error counters and
``max_ops + 1`` histograms of 14 buckets (under 1 KiB each), whatever clients send.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .protocol import ErrorCode

__all__ = ["BUCKETS_SECONDS", "UNKNOWN", "CommandStats", "KnownOps", "OpStats"]

# The op (or error code) of everything that is not one the registry knows: a frame that could
# not be read, an op nobody registered, an op past max_ops.
UNKNOWN = "(unknown)"
# Upper bounds of the latency histogram, as Prometheus's ``le``: from a 0.5 ms ``ping`` to a
# command that held every player for seconds (DESIGN.md: one event loop serves them all).
BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"),
)  # fmt: skip
_ERROR_CODES = frozenset(ErrorCode)


class KnownOps(Protocol):
    """What says which ops are real (the command registry, a set in a test)."""

    def __contains__(self, op: str, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class OpStats:
    """One op's totals since start, as read at one moment.

    ``buckets`` are cumulative, one per bound of ``BUCKETS_SECONDS`` (each counts every command
    that took at most that long); ``errors`` are counts by error code.
    """

    op: str
    count: int
    sum_seconds: float
    buckets: tuple[int, ...]
    errors: Mapping[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def mean_seconds(self) -> float:
        return self.sum_seconds / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) in seconds, estimated as PromQL's
        ``histogram_quantile`` does: linear within the bucket that holds it; past the last
        finite bound, that bound (5 s). 0 when nothing was counted."""
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, cumulative in zip(BUCKETS_SECONDS, self.buckets, strict=True):
            if cumulative >= rank > 0:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return 0.0


class _Totals:
    """One op's running totals; ``buckets`` are per bucket here, made cumulative when read."""

    __slots__ = ("buckets", "count", "errors", "sum_seconds")

    def __init__(self) -> None:
        self.count = 0
        self.sum_seconds = 0.0
        self.buckets = [0] * len(BUCKETS_SECONDS)
        self.errors: dict[str, int] = {}


class CommandStats:
    """Counts, errors and latency per command op; ``observe`` records one command.

    ``known_ops`` says which ops may have a row of their own (the command registry: ``op in
    known_ops``), asked until an op has one; at most ``max_ops`` (default 256) such rows,
    everything else under ``UNKNOWN``. ``clock`` (default ``time.perf_counter``, in seconds) is
    what ``CommandRegistry.dispatch`` times a command with. Totals are since start: a row stays
    when its op is unregistered, as a Prometheus counter never goes back.
    """

    def __init__(
        self,
        known_ops: KnownOps,
        *,
        max_ops: int = 256,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.known_ops = known_ops
        self.max_ops = max_ops
        self.clock = clock
        self._ops: dict[str, _Totals] = {}

    def observe(self, op: str, seconds: float, error: str | None = None) -> None:
        """One command ``op`` that took ``seconds`` and failed with the error code ``error``
        (None: it succeeded). Callable from anywhere a command is answered, such as a game
        running in another process."""
        totals = self._ops.get(op) or self._admit(op)
        totals.count += 1
        totals.sum_seconds += seconds
        # The first bound at or above it: ``le`` is inclusive.
        totals.buckets[bisect.bisect_left(BUCKETS_SECONDS, seconds)] += 1
        if error is not None:
            code = str(error) if error in _ERROR_CODES else UNKNOWN
            totals.errors[code] = totals.errors.get(code, 0) + 1

    def _admit(self, op: str) -> _Totals:
        if op not in self.known_ops or len(self._ops) >= self.max_ops:
            op = UNKNOWN
        totals = self._ops.get(op)
        if totals is None:
            totals = self._ops[op] = _Totals()
        return totals

    def snapshot(self) -> list[OpStats]:
        """Every op counted so far, by name."""
        return [
            OpStats(
                op,
                totals.count,
                totals.sum_seconds,
                tuple(itertools.accumulate(totals.buckets)),
                dict(totals.errors),
            )
            for op, totals in sorted(self._ops.items())
        ]

    def slowest(self, limit: int) -> list[OpStats]:
        """The ``limit`` ops with the highest estimated p99, then the highest mean."""
        ops = self.snapshot()
        ops.sort(key=lambda stats: (stats.quantile(0.99), stats.mean_seconds), reverse=True)
        return ops[:limit]
