"""When each connection is closed at shutdown: in batches spread over most of the shutdown
timeout (Phoenix's drainer), so that players do not all reconnect in the same instant.

A plan only; ``Hub.close_connections`` carries it out, on the hub's clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DrainPlan"]

T = TypeVar("T")

# The batches are spread over this share of the shutdown timeout; the rest is left for the
# last batch's close handshakes, and for clients that are slow to answer theirs.
SPREAD_SHARE = 0.7
# Batches are this far apart, seconds: 35 of them over the default 5 s timeout.
TICK_SECONDS = 0.1
# The smallest batch: a server with a few players closes them at once, and stops at once.
MIN_BATCH = 10


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """Close ``batch_size`` connections every ``interval_seconds``, the first batch at once:
    ``batches`` batches in all, the last one ``spread_seconds`` after the first.

    2,000 connections under the default 5 s timeout: 35 batches of 58, 0.1 s apart, the last
    at 3.4 s. 50 connections: 5 batches of 10 within 0.4 s. 10 or fewer: one batch.
    """

    connections: int
    batch_size: int
    interval_seconds: float

    @classmethod
    def over(cls, connections: int, timeout_seconds: float) -> DrainPlan:
        """The plan for ``connections`` to close within ``timeout_seconds`` (0: all at once)."""
        # Rounded first: 0.7 / 0.1 is 6.999... in floating point.
        ticks = max(1, math.floor(round(timeout_seconds * SPREAD_SHARE / TICK_SECONDS, 6)))
        batch_size = max(MIN_BATCH, math.ceil(connections / ticks))
        return cls(connections, batch_size, TICK_SECONDS)

    @property
    def batches(self) -> int:
        return max(1, math.ceil(self.connections / self.batch_size))

    @property
    def spread_seconds(self) -> float:
        return (self.batches - 1) * self.interval_seconds

    def split(self, items: Sequence[T]) -> Iterator[tuple[float, Sequence[T]]]:
        """Each batch of ``items`` with when it is due, seconds after the first."""
        for index in range(self.batches):
            start = index * self.batch_size
            yield index * self.interval_seconds, items[start : start + self.batch_size]
