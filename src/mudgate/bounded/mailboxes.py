"""Mailboxes: messages kept for many recipients, capped per recipient, per sender and in bytes."""

from __future__ import annotations

import enum
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Generic

from .base import Clock, ContainerStats, K, T


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
