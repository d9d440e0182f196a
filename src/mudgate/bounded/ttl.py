"""Key-value and queue containers with a capacity and, for keys, a TTL."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Generic

from .base import AMORTIZED_EXPIRY, Clock, ContainerStats, K, T, V, check_bounds


class TTLMap(Generic[K, V]):
    """A mapping with a capacity and, optionally, a time to live per entry.

    Entries are kept in expiry order: with one TTL for the whole map, that is the order in which
    they were last written, so ``set`` moves a key to the end and restarts its TTL; reading does
    not. ``ttl_seconds=None`` keeps entries until evicted or removed.
    """

    __slots__ = ("_clock", "_entries", "capacity", "evictions", "expirations", "ttl_seconds")

    def __init__(
        self,
        capacity: int,
        ttl_seconds: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        check_bounds(capacity, ttl_seconds)
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.evictions = 0
        self.expirations = 0
        self._clock = clock
        # key -> (expires_at, value); expires_at is +inf without a TTL.
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        entry = self._entries.get(key)  # type: ignore[arg-type]
        return entry is not None and entry[0] > self._clock()

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def _expires_at(self) -> float:
        return float("inf") if self.ttl_seconds is None else self._clock() + self.ttl_seconds

    def set(self, key: K, value: V) -> tuple[K, V] | None:
        """Insert or replace ``key``, restarting its TTL; evicts the oldest entry when full.

        Returns the evicted entry, if one was.
        """
        entries = self._entries
        evicted = None
        if key in entries:
            entries.move_to_end(key)
        elif self.expire(AMORTIZED_EXPIRY) == 0 and len(entries) >= self.capacity:
            old_key, (_, old_value) = entries.popitem(last=False)
            evicted = (old_key, old_value)
            self.evictions += 1
        entries[key] = (self._expires_at(), value)
        return evicted

    def get(self, key: K, default: V | None = None) -> V | None:
        """The live value of ``key``, or ``default`` if it is missing or has expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return default
        return entry[1]

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` and return its live value (``default`` if missing or expired)."""
        entry = self._entries.pop(key, None)
        if entry is None or entry[0] <= self._clock():
            return default
        return entry[1]

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the live entries, oldest first."""
        now = self._clock()
        return [
            (key, value) for key, (expires_at, value) in self._entries.items() if expires_at > now
        ]

    def _expired_keys(self) -> Iterator[K]:
        # O(expired): entries are in expiry order, so stop at the first live one.
        now = self._clock()
        for key, (expires_at, _) in self._entries.items():
            if expires_at > now:
                return
            yield key

    def due(self) -> bool:
        """Whether the oldest entry has expired; O(1)."""
        return next(self._expired_keys(), None) is not None

    def expired(self) -> int:
        """How many entries have expired (and not been removed yet)."""
        return sum(1 for _ in self._expired_keys())

    def pop_expired(self, limit: int | None = None) -> list[tuple[K, V]]:
        """Remove and return expired entries, at most ``limit`` of them; O(expired)."""
        keys = list(itertools.islice(self._expired_keys(), limit))
        popped = [(key, self._entries.pop(key)[1]) for key in keys]
        self.expirations += len(popped)
        return popped

    def expire(self, limit: int | None = None) -> int:
        """Remove expired entries, at most ``limit`` of them; returns how many went."""
        return len(self.pop_expired(limit))

    def clear(self) -> None:
        self._entries.clear()

    def stats(self) -> ContainerStats:
        return ContainerStats(len(self._entries), self.capacity, self.evictions, self.expirations)


class BoundedQueue(Generic[T]):
    """A FIFO queue with a capacity and an optional TTL per item.

    Appending to a full queue drops the oldest item and counts an eviction: the newest items
    are the ones worth keeping (the notifier's queue of alerts, say).
    """

    __slots__ = ("_clock", "_items", "capacity", "evictions", "expirations", "ttl_seconds")

    def __init__(
        self,
        capacity: int,
        ttl_seconds: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        check_bounds(capacity, ttl_seconds)
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.evictions = 0
        self.expirations = 0
        self._clock = clock
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: T) -> None:
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.evictions += 1
        expires_at = float("inf") if self.ttl_seconds is None else self._clock() + self.ttl_seconds
        self._items.append((expires_at, item))

    def expire(self, limit: int | None = None) -> int:
        """Drop expired items from the front, at most ``limit``; O(expired)."""
        items = self._items
        now = self._clock()
        removed = 0
        while items and items[0][0] <= now and (limit is None or removed < limit):
            items.popleft()
            removed += 1
        self.expirations += removed
        return removed

    def drain(self) -> list[T]:
        """Remove and return every live item, oldest first."""
        self.expire()
        items = [item for _, item in self._items]
        self._items.clear()
        return items

    def stats(self) -> ContainerStats:
        return ContainerStats(len(self._items), self.capacity, self.evictions, self.expirations)
