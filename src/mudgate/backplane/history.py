"""Each room's and channel's recent events, so a player who reconnects gets what they missed.

Every event published to a room or a channel takes the next ``offset`` of its topic (1, 2, 3,
...), within an ``epoch``: a short random name for one unbroken run of offsets. A client keeps
the offset and epoch of the last event it got from each topic, and on reconnecting asks for
what came after it (``Recovery``): the events still kept, in order, or ``recovered: false``
with the reason when some are gone (the epoch changed, they expired, or the client asks about
an offset that never was). Centrifugo's history and recovery is the reference; unlike it, what
is kept here is bounded by memory as much as by count and age.

``TopicHistory`` keeps them in this process (one node, or a node whose Redis is away); the
Redis backplane keeps them in a capped stream per topic, shared by the nodes (redis.py). Both
answer with ``recover``, through ``decide``.

The bounds (``MUDGATE_ROOM_HISTORY_*``): at most ``size`` events and ``topic_bytes`` bytes a
topic, none older than ``ttl``; at most ``max_bytes`` all together (the least recently spoken
topics lose theirs first) and ``max_topics`` topics remembered. A topic whose events have all
gone keeps only its epoch and latest offset (``TOPIC_OVERHEAD_BYTES`` at most), for
``EPOCH_TTL_SECONDS``, so a player in a room that has been quiet a while still resumes with
nothing lost, rather than being told that everything was.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..bounded import ContainerStats
from ..memory.budget import HISTORY_ENTRY_BYTES as ENTRY_OVERHEAD_BYTES
from ..memory.budget import HISTORY_TOPIC_BYTES as TOPIC_OVERHEAD_BYTES
from ..protocol import Outgoing
from .topic import Topic

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "EPOCH_TTL_SECONDS",
    "TOPIC_OVERHEAD_BYTES",
    "Recovery",
    "TopicHistory",
    "decide",
    "new_epoch",
]


# How long a topic's epoch and latest offset are remembered after its last event.
EPOCH_TTL_SECONDS = 86_400.0

# Why a resume did not recover: the wire's ``reason``.
EPOCH_CHANGED = "epoch_changed"
TOO_OLD = "too_old"
OFFSET_AHEAD = "offset_ahead"
UNAVAILABLE = "unavailable"
RATE_LIMITED = "rate_limited"  # the player resumed too much, too fast: not read
TOO_MUCH = "too_much"  # more than the connection's outbox takes


def new_epoch() -> str:
    """A fresh epoch: 8 random hex digits."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to "what came after ``offset`` in ``epoch``?" for one topic."""

    recovered: bool
    epoch: str  # the topic's epoch now
    offset: int  # the topic's latest offset now
    messages: Sequence[Outgoing] = ()  # what was missed, in order (only when recovered)
    reason: str | None = None  # why not recovered


def decide(
    asked_offset: int,
    asked_epoch: str,
    epoch: str,
    latest: int,
    kept: Sequence[tuple[int, Outgoing]],
) -> Recovery:
    """The recovery of a client that last got ``asked_offset`` in ``asked_epoch``, from a
    topic now at ``latest`` in ``epoch`` that still keeps ``kept`` (offset, event) in order.

    A client that never had a position there (offset 0, no epoch: it joined before the topic
    was known) missed everything of the epoch: it gets all of it if all of it is kept."""
    if asked_offset == 0 and not asked_epoch:
        asked_epoch = epoch
    if asked_epoch != epoch:
        return Recovery(False, epoch, latest, reason=EPOCH_CHANGED)
    if asked_offset > latest:
        return Recovery(False, epoch, latest, reason=OFFSET_AHEAD)
    if asked_offset == latest:
        return Recovery(True, epoch, latest)
    if not kept or kept[0][0] > asked_offset + 1:
        return Recovery(False, epoch, latest, reason=TOO_OLD)
    missed = [message for offset, message in kept if offset > asked_offset]
    return Recovery(True, epoch, latest, missed)


def _copy(message: Outgoing, topic: Topic) -> Outgoing:
    copy = Outgoing(message.event, message.data)
    copy.topic, copy.offset, copy.epoch = topic, message.offset, message.epoch
    return copy


class _Topic:
    """One topic's epoch, latest offset and kept events (offset, kept at, event), oldest first.

    A list, not a deque: a deque holds its items in blocks of 64 slots (528 bytes) and keeps up
    to 16 blocks it has emptied, so a topic that had said a hundred events and fallen quiet
    still held 2.3 KB; a list costs 8 bytes a slot while it has events, and 56 once cleared.
    Its oldest go a slice at a time (``_trim``), which moves the rest once: at most ``size``.
    """

    __slots__ = ("bytes", "entries", "epoch", "latest", "spoken_at")

    def __init__(self, epoch: str, now: float) -> None:
        self.epoch = epoch
        self.latest = 0
        self.spoken_at = now
        self.entries: list[tuple[int, float, Outgoing]] = []
        self.bytes = 0


class TopicHistory:
    """What rooms and channels said lately, in this process, within its bounds.

    Topics with events are kept in the order they last spoke (``_speaking``), topics whose
    events have all gone in the order they fell quiet (``_quiet``): expiry walks each from its
    oldest and stops at the first that is not due (O(expired)).
    """

    def __init__(
        self,
        *,
        size: int,
        topic_bytes: int,
        ttl_seconds: float,
        max_bytes: int,
        max_topics: int,
        clock: Callable[[], float] = time.monotonic,
        epoch_ttl_seconds: float = EPOCH_TTL_SECONDS,
    ) -> None:
        self.size = size
        self.topic_bytes = topic_bytes
        self.ttl = ttl_seconds
        self.max_bytes = max_bytes
        self.max_topics = max_topics
        self.clock = clock
        self.epoch_ttl = epoch_ttl_seconds
        self._speaking: OrderedDict[Topic, _Topic] = OrderedDict()
        self._quiet: OrderedDict[Topic, _Topic] = OrderedDict()
        self.bytes = 0  # every kept event's bytes and overhead
        self.entries = 0
        self.kept = 0  # events kept since start
        self.trimmed = 0  # events let go to stay within a topic's count and bytes
        self.evicted = 0  # events let go to stay within max_bytes
        self.expirations = 0  # events, and quiet topics, gone with age
        self.forgotten = 0  # topics forgotten to stay within max_topics

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        """Topics remembered."""
        return len(self._speaking) + len(self._quiet)

    def __contains__(self, topic: object) -> bool:
        return topic in self._speaking or topic in self._quiet

    def position(self, topic: Topic) -> tuple[int, str] | None:
        """``topic``'s latest offset and epoch, if it is remembered."""
        record = self._speaking.get(topic) or self._quiet.get(topic)
        return None if record is None else (record.latest, record.epoch)

    def next(self, topic: Topic) -> tuple[int, str]:
        """The offset and epoch of ``topic``'s next event: call ``keep`` with it before
        anything else is published to ``topic``."""
        record = self._speaking.get(topic) or self._quiet.get(topic)
        if record is None:
            return 1, new_epoch()
        return record.latest + 1, record.epoch

    def keep(self, topic: Topic, offset: int, epoch: str, message: Outgoing) -> None:
        """Keep ``message``, ``topic``'s event at ``offset`` in ``epoch`` (from ``next``)."""
        now = self.clock()
        record = self._speaking.pop(topic, None) or self._quiet.pop(topic, None)
        if record is None or record.epoch != epoch:
            if record is not None:
                self._drop_entries(record)
            record = _Topic(epoch, now)
        self._speaking[topic] = record  # the most recently spoken, last
        record.latest = offset
        record.spoken_at = now
        # A slim copy: the outboxes' framing caches (WebSocket frame, SSE record, views) are
        # not kept with it; a replay frames it again.
        kept = Outgoing(message.event, message.data)
        kept.offset, kept.epoch = offset, epoch
        cost = len(message.data) + ENTRY_OVERHEAD_BYTES
        record.entries.append((offset, now, kept))
        record.bytes += cost
        self.bytes += cost
        self.entries += 1
        self.kept += 1
        self._trim(record, now)
        self._forget_past_cap()
        self._evict_past_bytes(topic)

    def recover(self, topic: Topic, offset: int, epoch: str) -> Recovery:
        """What ``topic`` said after ``offset`` in ``epoch``, if it still can be told."""
        record = self._speaking.get(topic) or self._quiet.get(topic)
        if record is None:  # never spoke, or forgotten: only "nothing yet" is known
            return Recovery(offset == 0, "", 0, reason=None if offset == 0 else UNAVAILABLE)
        now = self.clock()
        self._trim(record, now)
        kept = [(entry_offset, message) for entry_offset, _, message in record.entries]
        recovery = decide(offset, epoch, record.epoch, record.latest, kept)
        if not recovery.messages:
            return recovery
        # A copy for the one who resumes: what framing it gets as it is written (held in its
        # outbox, under its caps) is that connection's, and not kept here.
        copies = [_copy(message, topic) for message in recovery.messages]
        return Recovery(True, recovery.epoch, recovery.offset, copies)

    # Bounds

    def _trim(self, record: _Topic, now: float) -> None:
        entries, oldest_kept = record.entries, now - self.ttl
        gone, over = 0, len(entries) - self.size
        while gone < len(entries) and (
            gone < over or record.bytes > self.topic_bytes or entries[gone][1] <= oldest_kept
        ):
            _, at, message = entries[gone]
            self._forget_entry(record, message)
            if at <= oldest_kept:
                self.expirations += 1
            else:
                self.trimmed += 1
            gone += 1
        del entries[:gone]

    def _forget_entry(self, record: _Topic, message: Outgoing) -> None:
        """Uncount one of ``record``'s entries (the caller takes it out of the list)."""
        cost = len(message.data) + ENTRY_OVERHEAD_BYTES
        record.bytes -= cost
        self.bytes -= cost
        self.entries -= 1

    def _drop_entries(self, record: _Topic) -> int:
        count = len(record.entries)
        self.bytes -= record.bytes
        self.entries -= count
        record.entries.clear()
        record.bytes = 0
        return count

    def _fall_quiet(self, topic: Topic, record: _Topic) -> None:
        """``topic`` has no events left: remember only its epoch and latest offset."""
        del self._speaking[topic]
        self._quiet[topic] = record

    def _evict_past_bytes(self, spoken: Topic) -> None:
        """Past ``max_bytes``, the least recently spoken topics lose their events."""
        while self.bytes > self.max_bytes and self._speaking:
            topic, record = next(iter(self._speaking.items()))
            if topic == spoken:  # only the topic just spoken to is left: trim it instead
                entries, gone = record.entries, 0
                while self.bytes > self.max_bytes and gone < len(entries):
                    self._forget_entry(record, entries[gone][2])
                    gone += 1
                del entries[:gone]
                self.evicted += gone
                return
            self.evicted += self._drop_entries(record)
            self._fall_quiet(topic, record)

    def _forget_past_cap(self) -> None:
        while len(self) > self.max_topics:
            if self._quiet:
                self._quiet.popitem(last=False)
            else:
                _, record = self._speaking.popitem(last=False)
                self._drop_entries(record)
            self.forgotten += 1

    # Expiry (the janitor's Expiring)

    def _due_speaking(self, now: float) -> bool:
        if not self._speaking:
            return False
        return next(iter(self._speaking.values())).spoken_at <= now - self.ttl

    def _due_quiet(self, now: float) -> bool:
        if not self._quiet:
            return False
        return next(iter(self._quiet.values())).spoken_at <= now - self.epoch_ttl

    def due(self) -> bool:
        now = self.clock()
        return self._due_speaking(now) or self._due_quiet(now)

    def expired(self) -> int:
        """Whether anything is due (a lower bound on what ``expire`` would remove)."""
        return int(self.due())

    def expire(self, limit: int | None = None) -> int:
        """Let go of events older than the TTL in topics that have fallen quiet since, and of
        quiet topics past the epoch TTL; at most ``limit`` topics (None: all due)."""
        now, done = self.clock(), 0
        while (limit is None or done < limit) and self._due_speaking(now):
            topic, record = next(iter(self._speaking.items()))
            self.expirations += self._drop_entries(record)
            self._fall_quiet(topic, record)
            done += 1
        while (limit is None or done < limit) and self._due_quiet(now):
            self._quiet.popitem(last=False)
            self.expirations += 1
            done += 1
        return done

    def stats(self) -> ContainerStats:
        return ContainerStats(
            size=len(self),
            capacity=self.max_topics,
            evictions=self.trimmed + self.evicted + self.forgotten,
            expirations=self.expirations,
        )
