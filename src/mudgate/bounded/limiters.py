"""Rate limiters kept per key: sliding windows of attempts, token buckets, and counts of
requests under way."""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

from .base import AMORTIZED_EXPIRY, Clock, ContainerStats


class _Used(Protocol):
    last: float  # when the key was last used


U = TypeVar("U", bound=_Used)


class _ByLastUse(Generic[U]):
    """Per-key state, the keys in the order of their last use: one idle for ``idle_seconds``
    is forgotten from the front in O(expired), and past ``max_keys`` the idlest goes early.
    What the rate limiters share; each says when forgetting a key changes nothing."""

    __slots__ = ("_clock", "_keys", "evictions", "expirations", "idle_seconds", "max_keys")

    def __init__(self, max_keys: int, idle_seconds: float, clock: Clock) -> None:
        self.max_keys = max_keys
        self.idle_seconds = idle_seconds
        self.evictions = 0
        self.expirations = 0
        self._clock = clock
        self._keys: OrderedDict[str, U] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _make_room(self) -> None:
        """Before a new key: forget a few idle ones, or the idlest if there are none."""
        if self.expire(AMORTIZED_EXPIRY) == 0 and len(self._keys) >= self.max_keys:
            self._keys.popitem(last=False)
            self.evictions += 1

    def due(self) -> bool:
        """Whether the idlest key can be forgotten; O(1)."""
        keys = self._keys
        return bool(keys) and next(iter(keys.values())).last <= self._clock() - self.idle_seconds

    def expired(self) -> int:
        """How many keys ``expire`` would forget now; O(expired)."""
        cutoff = self._clock() - self.idle_seconds
        return sum(1 for _ in itertools.takewhile(lambda s: s.last <= cutoff, self._keys.values()))

    def expire(self, limit: int | None = None) -> int:
        """Forget keys idle for ``idle_seconds``, at most ``limit``; O(expired)."""
        keys = self._keys
        cutoff = self._clock() - self.idle_seconds
        removed = 0
        while keys and (limit is None or removed < limit):
            key = next(iter(keys))
            if keys[key].last > cutoff:
                break
            del keys[key]
            removed += 1
        self.expirations += removed
        return removed

    def stats(self) -> ContainerStats:
        return ContainerStats(len(self._keys), self.max_keys, self.evictions, self.expirations)


class _Window:
    """One key's counts: events in the current fixed window and in the one before it."""

    __slots__ = ("current", "index", "last", "previous")

    def __init__(self, index: int, now: float) -> None:
        self.index = index
        self.current = 0
        self.previous = 0
        self.last = now


class SlidingWindowLimiter(_ByLastUse[_Window]):
    """At most ``max_events`` events per key in any ``window_seconds``, for ``max_keys`` keys.

    Each key holds two counts, for the current fixed window and the one before, and an event
    is allowed while their sum is under ``max_events``. Any sliding window lies within those
    two, so no window ever holds more than ``max_events``; the price is that a key that used
    its whole allowance waits up to two windows. That is O(1) time and memory per key, where
    a log of event times would cost up to ``max_events`` floats per key (100,000 keys x
    1,000 events = 800 MB). Keys are ordered by
    their last event, so ``expire`` removes the stale ones from the front in O(expired). Past
    ``max_keys`` the key idle the longest is evicted (it forgets that key's history, the price
    of a bounded table).
    """

    __slots__ = ("max_events", "window_seconds")

    def __init__(
        self,
        max_events: int,
        window_seconds: float,
        max_keys: int,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_events < 1 or max_keys < 1:
            raise ValueError("max_events and max_keys must be at least 1")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        # A key whose last event left the window counts zero: forgetting it changes nothing.
        super().__init__(max_keys, window_seconds, clock)
        self.max_events = max_events
        self.window_seconds = window_seconds

    def _count(self, window: _Window, now: float) -> int:
        """Events in the current fixed window and the one before it (none if the last one
        left the sliding window)."""
        if window.last <= now - self.window_seconds:
            return 0
        index = int(now / self.window_seconds)
        if index == window.index:
            return window.current + window.previous
        if index == window.index + 1:
            return window.current
        return 0

    def hit(self, key: str) -> bool:
        """Record an event for ``key``; False (and nothing recorded) when it is over the limit."""
        now = self._clock()
        keys = self._keys
        window = keys.get(key)
        if window is None:
            self._make_room()
            window = keys[key] = _Window(int(now / self.window_seconds), now)
        elif self._count(window, now) >= self.max_events:
            return False
        index = int(now / self.window_seconds)
        if index != window.index:
            window.previous = window.current if index == window.index + 1 else 0
            window.current = 0
            window.index = index
        window.current += 1
        window.last = now
        keys.move_to_end(key)
        return True

    def recent(self, key: str) -> int:
        """``key``'s events in the current fixed window and the one before it."""
        window = self._keys.get(key)
        return 0 if window is None else self._count(window, self._clock())

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may have an event again (0 if it may now)."""
        window = self._keys.get(key)
        now = self._clock()
        if window is None or self._count(window, now) < self.max_events:
            return 0.0
        size = self.window_seconds
        index = int(now / size)
        # The current window's count alone still fills the allowance: two windows on.
        windows = 2 if index == window.index and window.current >= self.max_events else 1
        # Either way, the last event leaving the sliding window frees it all.
        return max(0.0, min((index + windows) * size, window.last + size) - now)


class LeakyBucket:
    """One sender's leaky bucket: it drains at ``limit`` events per ``window`` seconds, and an
    event that finds it over ``limit`` came too fast. Two floats per sender (the level and when
    it was last set), where a log of events would hold one float per event; the limit and the
    window are passed in, so a million connections share them rather than hold them."""

    __slots__ = ("_at", "_level")

    def __init__(self) -> None:
        self._level = 0.0
        self._at = 0.0

    def hit(self, now: float, limit: int, window: float) -> bool:
        """Count one more event at ``now``; False once the events come faster than ``limit``
        per ``window``."""
        self._level = max(0.0, self._level - (now - self._at) * limit / window) + 1
        self._at = now
        return self._level <= limit


class _Bucket:
    __slots__ = ("last", "level")

    def __init__(self, level: float, last: float) -> None:
        self.level = level
        self.last = last


class TokenBuckets(_ByLastUse[_Bucket]):
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` a second, for at most
    ``max_keys`` keys.

    ``take`` spends a token. A key that takes while its bucket is empty is refused, and
    goes into debt (each refused take still costs a token, so a sender that keeps going
    waits longer, not shorter); at ``burst`` tokens of debt it is over the limit. Buckets are
    ordered by last use, and one that has had time to refill from the bottom is forgotten in
    O(expired): a new bucket starts full, so forgetting it changes nothing. Past ``max_keys``
    the idlest key is forgotten early (it starts again with a full bucket).
    """

    __slots__ = ("burst", "rate")

    def __init__(
        self, rate: float, burst: int, max_keys: int, *, clock: Clock = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        # Idle from the deepest debt to a full bucket, a key is as good as new.
        super().__init__(max_keys, 2 * burst / rate, clock)
        self.rate = rate
        self.burst = burst

    @property
    def refill_seconds(self) -> float:
        """How long a bucket takes to refill from the deepest debt."""
        return self.idle_seconds

    def take(self, key: str) -> float:
        """Spend a token of ``key``'s. Returns 0 when one was there; else how many seconds
        until one will be (the take was refused), or ``math.inf`` once the key is
        ``burst`` tokens in debt (it kept sending while refused)."""
        now = self._clock()
        buckets = self._keys
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room()
            bucket = buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.level = min(self.burst, bucket.level + (now - bucket.last) * self.rate)
            bucket.last = now
            buckets.move_to_end(key)
        if bucket.level >= 1:
            bucket.level -= 1
            return 0.0
        if bucket.level <= -self.burst:
            return math.inf
        bucket.level -= 1
        return (1 - bucket.level) / self.rate


class InFlight:
    """How many requests each key has under way, at most ``limit`` per key.

    A key goes with its last request, so the size is bounded by what is under way (itself
    bounded by the sockets), and past ``max_keys`` keys a new one is refused rather than
    pushing out a count that is still in use.
    """

    __slots__ = ("_counts", "limit", "max_keys", "refused", "under_way")

    def __init__(self, limit: int, max_keys: int) -> None:
        if limit < 1 or max_keys < 1:
            raise ValueError(f"limit and max_keys must be at least 1, got {limit}, {max_keys}")
        self.limit = limit
        self.max_keys = max_keys
        self.refused = 0
        self.under_way = 0  # every key's together
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)

    def enter(self, key: str) -> bool:
        """Count one more request for ``key``; False (nothing counted) at its limit."""
        count = self._counts.get(key, 0)
        if count >= self.limit or (not count and len(self._counts) >= self.max_keys):
            self.refused += 1
            return False
        self._counts[key] = count + 1
        self.under_way += 1
        return True

    def leave(self, key: str) -> None:
        """One of ``key``'s requests is over."""
        count = self._counts.get(key, 0)
        if count:
            self.under_way -= 1
        if count <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count - 1
