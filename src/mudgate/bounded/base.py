"""What every bounded container shares: its bounds check and its counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

Clock = Callable[[], float]


def check_bounds(capacity: int, ttl_seconds: float | None) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")


# Inserting a new key first forgets up to this many expired ones (O(1)): a structure under
# churn stays near its working set between the janitor's sweeps instead of filling to its cap.
AMORTIZED_EXPIRY = 2


class Expiring(Protocol):
    """A bounded container whose entries expire in order: what the janitor sweeps."""

    def expire(self, limit: int | None = None) -> int: ...
    def expired(self) -> int: ...
    def due(self) -> bool: ...
    def stats(self) -> ContainerStats: ...


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """A container's counters, as monitoring reads them."""

    size: int
    capacity: int
    evictions: int
    expirations: int
