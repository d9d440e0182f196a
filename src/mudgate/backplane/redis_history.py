"""Room and channel history in Redis: one numbering and one capped stream per topic, shared
by every node, so a player who reconnects to any node gets what they missed.

Each kept event is one run of ``KEEP`` (queued like every other write: nothing a player does
waits for Redis), which takes the topic's next offset in its epoch, adds ``"offset"`` and
``"epoch"`` to the event's JSON, keeps it in the topic's stream within the bounds of
``MUDGATE_ROOM_HISTORY_*`` and publishes it; every node subscribed to the topic delivers it
from there, this one included, so every node sees a topic's events in offset order. Under
``MUDGATE_REDIS_PREFIX`` (``P``):

``P:history:meta:<topic>``
    A hash: the topic's ``epoch``, ``latest`` offset and the ``bytes`` its stream holds. It
    lives ``EPOCH_TTL_SECONDS`` (a day) after the topic's last event, so a player in a room
    that fell quiet still resumes with nothing lost, and a node's restart changes nothing.
``P:history:stream:<topic>``
    A stream of the topic's events, entry ``<offset>-0`` (wire.py): at most
    ``room_history_size`` events and ``room_history_topic_bytes`` bytes (each event's stamped
    JSON and ``ENTRY_OVERHEAD_BYTES``, as in a node's memory), none older than
    ``room_history_ttl``; the key itself expires ``room_history_ttl`` after the last event.
``P:history:index:topics``, ``P:history:index:speaking``, ``P:history:index:bytes``
    Every topic remembered and every topic with events, each scored by its last event (ms),
    and the bytes of all streams together: past ``room_history_max_topics`` the least
    recently spoken topics are forgotten (meta and stream), past ``room_history_max_bytes``
    they lose their events first (keeping their position). Each run also lets go of up to
    ``PURGE_BATCH`` topics whose events or position are past their age (O(expired)).

Ages are the publishing node's wall clock (``RedisBackplane(wall_clock=)``): offsets never
depend on it, only when an event counts as too old, so nodes' clocks need only agree within
what ``room_history_ttl`` can spare. A key of the wrong type, or a position no node would have
written, is replaced (a new epoch) rather than obeyed; what a resume reads is checked like
every other record (wire.py).

A kept event that Redis never numbered (the write queue dropped it, Redis went away before
it was written, or refused the script) is delivered to this node's listeners as it is,
without an offset, and counted: this node's players lose nothing they would have seen before.
What this node delivers directly meanwhile (a tell, a command's reply) waits behind the kept
events it published before (kept_order.py), so that its players see them in the order made.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..protocol import Outgoing
from ..settings import Settings
from .history import (
    ENTRY_OVERHEAD_BYTES,
    EPOCH_TTL_SECONDS,
    UNAVAILABLE,
    Recovery,
    decide,
    new_epoch,
)
from .kept_order import Deliver, KeptOrder
from .topic import Topic
from .wire import Invalid, decode_entry, decode_position
from .writes import Command

__all__ = ["KEEP", "PURGE_BATCH", "RedisHistory"]

logger = logging.getLogger("mudgate.backplane")

# Topics past their age let go of by each run of KEEP, at most (of each index).
PURGE_BATCH = 16
# The highest offset a resume may ask to start after (a stream ID's part is 64 bits).
MAX_OFFSET = 10**18

# Number, keep and publish one event.
# KEYS: meta, stream, the topics index, the speaking index, the bytes of all streams.
# ARGV: 1 sequence, 2 node id, 3 topic, 4 channel, 5 event, 6 data (a JSON object), 7 an
# epoch for a topic that has none, 8 now (ms), 9 size, 10 topic bytes, 11 ttl (ms), 12 max
# bytes, 13 max topics, 14 position ttl (ms), 15 meta prefix, 16 stream prefix, 17 purge
# batch, 18 entry overhead. Returns the event's offset.
KEEP = """
local meta, stream, topics, speaking, total_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local topic, data = ARGV[3], ARGV[6]
local now, size, topic_bytes = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl, max_bytes, max_topics = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local position_ttl, batch, overhead = tonumber(ARGV[14]), tonumber(ARGV[17]), tonumber(ARGV[18])
local meta_prefix, stream_prefix = ARGV[15], ARGV[16]

-- A key of another type (planted, or another version's) is replaced, not obeyed.
local function of_kind(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= kind and found ~= 'none' then redis.call('DEL', key) end
end
of_kind(topics, 'zset')
of_kind(speaking, 'zset')
of_kind(total_key, 'string')
local total = tonumber(redis.call('GET', total_key) or '0') or 0

-- A topic loses its events (keeping its position); or is forgotten altogether.
local function drop_events(name)
  local key = meta_prefix .. name
  if redis.call('TYPE', key)['ok'] == 'hash' then
    total = total - (tonumber(redis.call('HGET', key, 'bytes') or '0') or 0)
    redis.call('HSET', key, 'bytes', 0)
  end
  redis.call('DEL', stream_prefix .. name)
  redis.call('ZREM', speaking, name)
end
local function forget(name)
  drop_events(name)
  redis.call('DEL', meta_prefix .. name)
  redis.call('ZREM', topics, name)
end

-- Whatever is past its age, oldest first (this topic's own included).
local oldest_kept = now - ttl
for _, name in ipairs(redis.call('ZRANGEBYSCORE', speaking, '-inf', oldest_kept,
                                 'LIMIT', 0, batch)) do
  drop_events(name)
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', topics, '-inf', now - position_ttl,
                                 'LIMIT', 0, batch)) do
  forget(name)
end

-- The topic's position, or a new epoch when it has none a node would have written.
of_kind(meta, 'hash')
of_kind(stream, 'stream')
local position = redis.call('HMGET', meta, 'epoch', 'latest', 'bytes')
local epoch, latest = position[1], tonumber(position[2])
local bytes = math.max(tonumber(position[3]) or 0, 0)
if not (epoch and string.len(epoch) <= 16 and string.match(epoch, '^[0-9a-f]+$')
        and latest and latest >= 0 and latest == math.floor(latest)) then
  total = total - bytes
  redis.call('DEL', meta, stream)
  epoch, latest, bytes = ARGV[7], 0, 0
end
-- Nothing kept (the stream expired on its own), or entries past the position: start clean.
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
if not last or (tonumber(string.match(last[1], '^(%d+)')) or 0) > latest then
  total = total - bytes
  bytes = 0
  redis.call('DEL', stream)
end

-- Number it, stamp it, keep it.
local offset = string.format('%d', latest + 1)
local separator = ','
if string.sub(data, -2) == '{}' then separator = '' end
local stamped = string.sub(data, 1, -2) .. separator .. '"offset":' .. offset
  .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', stream, offset .. '-0', 't', string.format('%d', now), 'e', ARGV[5],
           'd', stamped)
local cost = string.len(stamped) + overhead
bytes = bytes + cost
total = total + cost

-- The topic's own bounds: count, bytes, age (the oldest go first).
local length = redis.call('XLEN', stream)
local function pop_oldest()
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', stream, first[1])
  local gone = string.len(first[2][6] or '') + overhead
  bytes = bytes - gone
  total = total - gone
  length = length - 1
end
while length > 0 do
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local at = tonumber(first[2][2]) or 0
  if length <= size and bytes <= topic_bytes and at > oldest_kept then break end
  pop_oldest()
end

-- Past max_topics, the least recently spoken are forgotten.
redis.call('ZADD', topics, now, topic)
local excess = redis.call('ZCARD', topics) - max_topics
if excess > 0 then
  for _, name in ipairs(redis.call('ZRANGE', topics, 0, excess)) do
    if excess > 0 and name ~= topic then
      forget(name)
      excess = excess - 1
    end
  end
end
-- Past max_bytes, the least recently spoken lose their events; this one last.
while total > max_bytes do
  local name = nil
  for _, candidate in ipairs(redis.call('ZRANGE', speaking, 0, 1)) do
    if not name and candidate ~= topic then name = candidate end
  end
  if name then
    drop_events(name)
  elseif length > 0 then
    pop_oldest()
  else
    total = 0
  end
end

if length > 0 then
  redis.call('ZADD', speaking, now, topic)
  redis.call('PEXPIRE', stream, ttl)
else
  redis.call('DEL', stream)
  redis.call('ZREM', speaking, topic)
  bytes = 0
end
redis.call('HSET', meta, 'epoch', epoch, 'latest', offset, 'bytes', math.max(bytes, 0))
redis.call('PEXPIRE', meta, position_ttl)
redis.call('PEXPIRE', topics, position_ttl)
if redis.call('EXISTS', speaking) == 0 or total < 0 then total = 0 end
if total > 0 then
  redis.call('SET', total_key, string.format('%d', total), 'PX', ttl)
  redis.call('PEXPIRE', speaking, ttl)
else
  redis.call('DEL', total_key)
end

redis.call('PUBLISH', ARGV[4], 'k' .. ARGV[2] .. '\\n' .. ARGV[1] .. '\\n' .. offset .. '\\n'
           .. epoch .. '\\n' .. ARGV[5] .. '\\n' .. stamped)
return tonumber(offset)
"""

KEEP_KEYS = 5
# Where a KEEP command (EVALSHA, sha, the number of keys, the keys, ARGV) holds its sequence.
_SEQUENCE_AT = 3 + KEEP_KEYS

# Given a kept event Redis did not number, to deliver here as it is; ``refused``: Redis is up
# and refused only the script, so the event may still be published (plainly) to the others.
Lost = Callable[[Topic, Outgoing, bool], None]
OnInvalid = Callable[[Invalid], None]


class RedisHistory:
    """The keys and the keep script's arguments, the kept events this node published and has
    not seen come back from Redis yet, and the reading of a topic's history for a resume.

    Every kept event this node publishes is ``unconfirmed`` until it comes back on the
    subscriber connection (``echoed``; Redis publishes what one connection sends in order,
    so its sequence confirms every earlier one), Redis answers it for a topic this node does
    not listen to, or it is lost: then it is delivered here as it is (``lost``). What this
    node delivers directly waits behind its unconfirmed events (``after_kept``).
    """

    def __init__(
        self,
        settings: Settings,
        node_id: str,
        *,
        lost: Lost,
        listening: Callable[[Topic], bool],
        wall_clock: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        prefix = settings.redis_prefix
        self.settings = settings
        self.node_id = node_id
        self.meta_prefix = f"{prefix}:history:meta:"
        self.stream_prefix = f"{prefix}:history:stream:"
        self.topics_key, self.speaking_key, self.bytes_key = (
            f"{prefix}:history:index:{name}" for name in ("topics", "speaking", "bytes")
        )
        self._lost = lost
        self._listening = listening
        self._wall_clock = wall_clock
        self._ttl_ms = _milliseconds(settings.room_history_ttl)
        self._position_ttl_ms = _milliseconds(max(EPOCH_TTL_SECONDS, settings.room_history_ttl))
        self.sha: str | None = None  # KEEP's SHA1, loaded on each connection
        self._sequence = 0
        self._echoed = 0  # the highest sequence seen back from Redis
        self._unconfirmed: OrderedDict[int, tuple[Topic, Outgoing]] = OrderedDict()
        self._refused: str | None = None  # what Redis answered KEEP, while it refuses it
        # Direct deliveries waiting for the unconfirmed events: as many as commands may wait to
        # be written (each kept event in flight is one of those), none longer than a Redis call.
        self._order = KeptOrder(settings.backplane_queue_size, settings.backplane_timeout, clock)
        # Counters for monitoring.
        self.kept = 0  # events numbered and kept in Redis by this node's publishes
        self.dropped = 0  # events Redis never numbered, delivered here without an offset
        # What all nodes keep in Redis, as last read (at each renewal of the lease).
        self.topics = 0
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.settings.room_history_size > 0

    def __len__(self) -> int:
        """Kept events published here and not confirmed yet."""
        return len(self._unconfirmed)

    # Keeping

    def keep(self, topic: Topic, channel: str, message: Outgoing) -> Command | None:
        """The command that numbers, keeps and publishes ``message`` (a room's or channel's
        event, its data a JSON object without offset and epoch); None when Redis was never
        reached (the event is then lost to the others, and delivered here)."""
        if self.sha is None:
            self.dropped += 1
            self._lost(topic, message, False)
            return None
        self._sequence += 1
        self._unconfirmed[self._sequence] = (topic, message)
        settings = self.settings
        return (
            "EVALSHA",
            self.sha,
            KEEP_KEYS,
            self.meta_prefix + topic,
            self.stream_prefix + topic,
            self.topics_key,
            self.speaking_key,
            self.bytes_key,
            self._sequence,
            self.node_id,
            topic,
            channel,
            message.event,
            message.data,
            new_epoch(),
            _milliseconds(self._wall_clock()),
            settings.room_history_size,
            settings.room_history_topic_bytes,
            self._ttl_ms,
            settings.room_history_max_bytes,
            settings.room_history_max_topics,
            self._position_ttl_ms,
            self.meta_prefix,
            self.stream_prefix,
            PURGE_BATCH,
            ENTRY_OVERHEAD_BYTES,
        )

    def _sequence_of(self, command: Command) -> int | None:
        if command[0] != "EVALSHA" or command[1] != self.sha or self.sha is None:
            return None
        sequence: int = command[_SEQUENCE_AT]
        return sequence

    def echoed(self, sequence: int) -> None:
        """A kept event this node published came back from Redis (and was delivered): it,
        and every one published before it, were numbered."""
        self._echoed = max(self._echoed, sequence)
        while self._unconfirmed and next(iter(self._unconfirmed)) <= sequence:
            self._unconfirmed.popitem(last=False)
        self._confirm()

    def answered(self, command: Command, reply: object) -> bool:
        """What Redis answered to a queued command; whether it was a KEEP."""
        sequence = self._sequence_of(command)
        if sequence is None:
            return False
        if isinstance(reply, ResponseError):
            self._failed(reply)
            self._lose(sequence, refused=True)
            return True
        self.kept += 1
        if self._refused is not None:
            logger.info("Redis keeps room history again")
            self._refused = None
        pending = self._unconfirmed.get(sequence)
        # No echo comes for a topic this node does not listen to.
        if pending is not None and (sequence <= self._echoed or not self._listening(pending[0])):
            del self._unconfirmed[sequence]
            self._confirm()
        return True

    def dropped_command(self, command: Command) -> None:
        """The write queue dropped ``command`` unwritten."""
        sequence = self._sequence_of(command)
        if sequence is not None:
            self._lose(sequence)

    def lost(self) -> None:
        """The connection is gone: what was not seen back may never have been numbered
        (or was, and its echo is lost with the connection); delivered here, in order."""
        while self._unconfirmed:
            self._lose(next(iter(self._unconfirmed)))

    def _lose(self, sequence: int, *, refused: bool = False) -> None:
        pending = self._unconfirmed.pop(sequence, None)
        if pending is not None:
            self.dropped += 1
            self._lost(*pending, refused)
            self._confirm()

    # Direct deliveries, in order behind the kept events

    def after_kept(self, deliver: Deliver) -> None:
        """``Backplane.after_kept``: at once while no kept event of this node is on its way
        and nothing waits (no allocation: the common case), else in order behind them."""
        if not self._unconfirmed and not self._order:
            deliver()
        else:
            self._order.wait(self._sequence, deliver)

    def _confirm(self) -> None:
        """Every kept event before the first unconfirmed one is settled: release what waited
        for no more (after the event itself was delivered, by the caller or ``_lost``)."""
        if self._order:  # else nothing waits, and whatever waits next waits for later events
            unconfirmed = self._unconfirmed
            self._order.confirmed(next(iter(unconfirmed)) - 1 if unconfirmed else self._sequence)

    def release_all(self) -> None:
        """Make every direct delivery waiting now (the backplane closes)."""
        self._order.release_all()

    @property
    def waiting(self) -> int:
        """Direct deliveries waiting behind kept events."""
        return len(self._order)

    @property
    def unordered(self) -> int:
        """Direct deliveries made before the kept events they waited for (past the cap or
        the timeout)."""
        return self._order.unordered

    def _failed(self, error: ResponseError) -> None:
        if self._refused is None:
            logger.error(
                "Redis refuses to keep room history: room and channel events go out without "
                "an offset, and are not kept, until it works again (logged once)",
                extra={"error": str(error)},
            )
        self._refused = str(error)[:300]

    @property
    def problem(self) -> str | None:
        """Why events are not kept, while Redis refuses the script."""
        if self._refused is None:
            return None
        return f"Redis refuses to keep room history: {self._refused}"

    # Recovering

    async def recover(
        self, redis: Redis, topic: Topic, offset: int, epoch: str, invalid: OnInvalid
    ) -> Recovery:
        """What ``topic`` said after ``offset`` in ``epoch``, read from Redis in one
        transaction (its position and the events after ``offset``)."""
        start = min(offset, MAX_OFFSET) + 1
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.meta_prefix + topic, ["epoch", "latest"])
            pipe.xrange(
                self.stream_prefix + topic,
                min=f"{start}-0",
                max="+",
                count=self.settings.room_history_size,
            )
            position, entries = await pipe.execute(raise_on_error=False)
        try:
            if isinstance(position, ResponseError):
                raise Invalid("history", f"a topic's position: {position}")
            if position == [None, None]:  # never spoke, or forgotten
                raise LookupError(topic)
            topic_epoch, latest = decode_position(*position)
        except LookupError:
            return _unknown(offset)
        except Invalid as error:
            invalid(error)
            return _unknown(offset)
        if isinstance(entries, ResponseError):
            invalid(Invalid("history", f"a topic's stream: {entries}"))
            entries = []
        kept = self._kept(topic, topic_epoch, latest, entries, invalid)
        return decide(offset, epoch, topic_epoch, latest, kept)

    def _kept(
        self,
        topic: Topic,
        epoch: str,
        latest: int,
        entries: list[tuple[bytes, dict[bytes, bytes] | None]],
        invalid: OnInvalid,
    ) -> list[tuple[int, Outgoing]]:
        """The events of ``entries`` that can be replayed: in order, without a gap, not past
        their age. One no node would have written breaks the run: only those after it are."""
        oldest_kept = _milliseconds(self._wall_clock() - self.settings.room_history_ttl)
        kept: list[tuple[int, Outgoing]] = []
        for entry_id, fields in entries:
            try:
                offset, at, message = decode_entry(
                    entry_id, fields, epoch, self.settings.outbox_max_bytes
                )
                if offset > latest or (kept and offset != kept[-1][0] + 1):
                    raise Invalid("history", f"offset {offset} out of order (latest {latest})")
            except Invalid as error:
                invalid(error)
                kept = []
                continue
            if at <= oldest_kept and not kept:
                continue  # past its age: gone, as if trimmed
            message.topic = topic
            kept.append((offset, message))
        return kept

    # Monitoring

    def counted(self, topics: object, total: object) -> None:
        """What all nodes keep in Redis, from the replies to ZCARD of the topics index and GET
        of the bytes (left as they were when Redis refused, or holds no number)."""
        if isinstance(topics, int):
            self.topics = topics
        if total is None:
            self.bytes = 0
        elif isinstance(total, bytes) and total.isdigit():
            self.bytes = int(total)


def _unknown(offset: int) -> Recovery:
    """A topic with no position: only "nothing yet" is known (as history.TopicHistory)."""
    return Recovery(offset == 0, "", 0, reason=None if offset == 0 else UNAVAILABLE)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
