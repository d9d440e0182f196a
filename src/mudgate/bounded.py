"""The memory-safe containers every structure in mudgate is built from.

Each container has a capacity, evicts its oldest entry when an insert would pass it, and (where
entries go stale) a TTL. Expiry walks entries in expiry order and stops at the first live one,
so a sweep costs O(expired), never O(size). Every container counts what it evicted and expired
so monitoring can show it.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = [
    "BoundedQueue",
    "ContainerStats",
    "Mailboxes",
    "Refused",
    "SlidingWindowLimiter",
    "TTLMap",
    "TokenBuckets",
    "leak",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

Clock = Callable[[], float]


def _check_bounds(capacity: int, ttl_seconds: float | None) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")


# Inserting a new key first forgets up to this many expired ones (O(1)): a structure under
# churn stays near its working set between the janitor's sweeps instead of filling to its cap.
AMORTIZED_EXPIRY = 2


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """A container's counters, as monitoring reads them."""

    size: int
    capacity: int
    evictions: int
    expirations: int


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
        _check_bounds(capacity, ttl_seconds)
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
        _check_bounds(capacity, ttl_seconds)
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


class Refused(enum.Enum):
    """Why ``Mailboxes.append`` did not queue an item."""

    MAILBOX_FULL = "mailbox_full"
    """The recipient's mailbox holds max_per_key items, or all of them max_bytes or
    max_keys: nothing queued is pushed out to make room."""
    SENDER_FULL = "sender_full"
    """The sender has max_per_sender items waiting already."""


class _Letter(Generic[K, T]):
    __slots__ = ("expires_at", "item", "key", "sender", "size")

    def __init__(self, expires_at: float, key: K, item: T, sender: str | None, size: int) -> None:
        self.expires_at = expires_at
        self.key = key
        self.item: T | None = item  # None once delivered
        self.sender = sender
        self.size = size


# Delivered letters the line may hold (they leave it lazily) before it is compacted.
_COMPACT_AFTER = 64


class Mailboxes(Generic[K, T]):
    """Per-key FIFO mailboxes whose items share one TTL, bounded per key, per sender, in keys
    and in bytes, and fair: past a cap a new item is refused, and nothing queued is ever
    pushed out to make room. One sender cannot evict another's queued items, nor (past
    ``max_per_sender``) fill everyone's mailboxes.

    Every item is also kept, in arrival order, in one global line. With one TTL, arrival order
    is expiry order, so ``expire`` pops the line's front while it is due and takes each item
    off the front of its own mailbox: O(expired), however many keys and items there are. An
    item delivered by ``take`` is released at once (its bytes and its sender's share) and
    leaves the line lazily; the line is compacted when delivered items outnumber the rest,
    so it never holds more than twice what is queued (plus a constant).
    """

    __slots__ = (
        "_boxes",
        "_clock",
        "_delivered",
        "_line",
        "_senders",
        "_sizeof",
        "expirations",
        "items_held",
        "max_bytes",
        "max_keys",
        "max_per_key",
        "max_per_sender",
        "refusals",
        "size_bytes",
        "ttl_seconds",
    )

    def __init__(
        self,
        max_keys: int,
        max_per_key: int,
        max_bytes: int,
        ttl_seconds: float,
        *,
        max_per_sender: int | None = None,
        clock: Clock = time.monotonic,
        sizeof: Callable[[T], int] = lambda item: 0,
    ) -> None:
        if min(max_keys, max_per_key, max_bytes, max_per_sender or 1) < 1 or ttl_seconds <= 0:
            raise ValueError("caps must be at least 1 and ttl_seconds positive")
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender or max_keys * max_per_key
        self.ttl_seconds = ttl_seconds
        self.expirations = 0
        self.refusals = 0
        self.items_held = 0  # items queued, not yet delivered nor expired
        self.size_bytes = 0  # their bytes
        self._clock = clock
        self._sizeof = sizeof
        self._boxes: dict[K, deque[_Letter[K, T]]] = {}
        self._line: deque[_Letter[K, T]] = deque()
        self._delivered = 0  # delivered letters still in the line
        # Sender -> items of theirs queued; a sender with none is not kept.
        self._senders: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._boxes)

    def __contains__(self, key: object) -> bool:
        return key in self._boxes

    def count(self, key: K) -> int:
        box = self._boxes.get(key)
        return 0 if box is None else len(box)

    def sent_by(self, sender: str) -> int:
        """How many of ``sender``'s items are queued."""
        return self._senders.get(sender, 0)

    def append(self, key: K, item: T, sender: str | None = None) -> Refused | None:
        """Queue ``item`` for ``key``; None, or why it was refused. A ``sender`` of None (the
        game itself) has no share to exceed."""
        size = self._sizeof(item)
        box = self._boxes.get(key)
        if (
            (box is None and len(self._boxes) >= self.max_keys)
            or (box is not None and len(box) >= self.max_per_key)
            or self.size_bytes + size > self.max_bytes
        ):
            self.refusals += 1
            return Refused.MAILBOX_FULL
        if sender is not None:
            if self._senders.get(sender, 0) >= self.max_per_sender:
                self.refusals += 1
                return Refused.SENDER_FULL
            self._senders[sender] = self._senders.get(sender, 0) + 1
        if box is None:
            box = self._boxes[key] = deque()
        letter = _Letter(self._clock() + self.ttl_seconds, key, item, sender, size)
        box.append(letter)
        self._line.append(letter)
        self.items_held += 1
        self.size_bytes += size
        return None

    def _release(self, letter: _Letter[K, T]) -> None:
        letter.item = None
        self.items_held -= 1
        self.size_bytes -= letter.size
        sender = letter.sender
        if sender is not None:
            left = self._senders[sender] - 1
            if left:
                self._senders[sender] = left
            else:
                del self._senders[sender]

    def take(self, key: K) -> list[T]:
        """Remove and return ``key``'s live items, oldest first."""
        box = self._boxes.pop(key, None)
        if box is None:
            return []
        now = self._clock()
        items = [letter.item for letter in box if letter.expires_at > now]
        for letter in box:
            self._release(letter)
        self._delivered += len(box)
        if self._delivered > _COMPACT_AFTER and self._delivered * 2 > len(self._line):
            self._line = deque(letter for letter in self._line if letter.item is not None)
            self._delivered = 0
        return items  # type: ignore[return-value]  # live letters hold their item

    def expire(self, limit: int | None = None) -> int:
        """Remove due items, looking at most at ``limit`` letters of the line; returns how
        many were still queued. O(expired): the line is in expiry order."""
        line = self._line
        now = self._clock()
        looked = removed = 0
        while line and line[0].expires_at <= now and (limit is None or looked < limit):
            letter = line.popleft()
            looked += 1
            if letter.item is None:
                self._delivered -= 1
                continue
            box = self._boxes[letter.key]
            box.popleft()  # the same letter: each box is in expiry order too
            if not box:
                del self._boxes[letter.key]
            self._release(letter)
            removed += 1
        self.expirations += removed
        return removed

    def due(self) -> bool:
        """Whether the line's oldest letter is due; O(1)."""
        return bool(self._line) and self._line[0].expires_at <= self._clock()

    def expired(self) -> int:
        """How many queued items are due; O(expired), for dry runs."""
        now = self._clock()
        return sum(
            1
            for letter in itertools.takewhile(lambda letter: letter.expires_at <= now, self._line)
            if letter.item is not None
        )

    def stats(self) -> ContainerStats:
        # Nothing is ever evicted: past a cap, items are refused (``refusals``).
        return ContainerStats(len(self._boxes), self.max_keys, 0, self.expirations)


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


def leak(level: float, elapsed: float, limit: int, window: float) -> float:
    """A leaky bucket's level after one more event: ``level``, drained for ``elapsed`` seconds
    at ``limit`` per ``window``, plus one. Over ``limit``, the events came too fast. Two floats
    per sender (the level and when it was last set), where a log of events would hold one
    float per event."""
    return max(0.0, level - elapsed * limit / window) + 1


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
