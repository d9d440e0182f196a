"""What waits in Redis for players who are away, under the same caps as a node's own
``Mailboxes``: per player, per sender and, all together, in bytes; past a cap a message is
refused and nothing queued is pushed out.

Every change runs in one Lua script, so the accounting beside the queues never drifts from
them. Under ``MUDGATE_REDIS_PREFIX`` (``P``), queues and accounting in key spaces of their
own, so no player's name can be one of the accounting's keys (a player named ``expiry`` once
made a list of the expiry index, and every tell to anyone away failed from then on):

``P:pending:queue:<player>``
    The player's queue (a list), oldest first.
``P:pending:meta:expiry``
    A sorted set: each player with a queue, scored by when it expires (its last push plus
    ``pending_message_ttl``). Each push first forgets up to ``PURGE_BATCH`` expired queues,
    so expiry costs O(expired) and needs no sweeper.
``P:pending:meta:bytes``, ``P:pending:meta:senders``, ``P:pending:meta:total``
    The bytes of each player's queue, the messages each sender has queued, and the bytes of
    all queues together (gone at 0).

Every key also expires on its own (after twice the TTL, renewed at each push), so a Redis
nobody pushes to any more empties itself.

The previous version kept both in one space: ``P:pending:<player>`` beside
``P:pending:{expiry,bytes,senders,total}``. Its queues are read once: taking a player's queue
also takes theirs from there (first, within the per-player cap) and settles what it counted
in the previous version's accounting, which this version only ever shrinks. So in a rolling
upgrade what an old node queued reaches its player on a new node, and what a new node queued
for a player who comes back to an old one waits for their next connection to a new node
(within ``pending_message_ttl``).

That version's keys expire on their own, except those its bug left without a TTL: a send that
failed half-way (at an accounting key a player's name had made a list of) had already pushed
to the queue, and Redis keeps a script's earlier writes. So a node gives every key of that
scheme without a TTL one (``RETIRE``, a ``SCAN`` step at a time) when it connects and every
``pending_message_ttl`` after, as old nodes may leave more until the last one stops. Drop
this once no node of that version runs.

A script Redis refuses (a key of the wrong type, planted or left behind; NOSCRIPT; OOM) loses
the tells it carried: ``MailboxHealth`` turns that into the backplane's problem (so
``/health/ready`` says degraded and the backplane's alert fires), logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from ..protocol import Outgoing
from ..settings import Settings
from .base import Delivery
from .wire import Invalid, decode_pending, encode_message, encode_pending

__all__ = [
    "MAILBOX_SCRIPTS",
    "RETIRE_SCAN_COUNT",
    "SEND_RESULTS",
    "MailboxHealth",
    "RedisMailbox",
]

logger = logging.getLogger("mudgate.backplane")

# Expired queues forgotten per push, at most.
PURGE_BATCH = 16

# The accounting's keys, under P:pending:meta: now and under P:pending: before.
ACCOUNTS = ("expiry", "bytes", "senders", "total")

# Forget a queue and what it counted for in ``books`` (expiry, bytes, senders, total: keys,
# or false for one not to touch).
_FORGET = """
local function forget(books, queue, player)
  local expiry, bytes, senders, total = books[1], books[2], books[3], books[4]
  if senders then
    for _, item in ipairs(redis.call('LRANGE', queue, 0, -1)) do
      local sender = string.match(item, '^([^\\n]*)\\n')
      if sender and sender ~= '' then
        if redis.call('HINCRBY', senders, sender, -1) <= 0 then
          redis.call('HDEL', senders, sender)
        end
      end
    end
  end
  if bytes then
    local size = tonumber(redis.call('HGET', bytes, player) or '0') or 0
    if size > 0 and total then
      if redis.call('DECRBY', total, size) <= 0 then redis.call('DEL', total) end
    end
    redis.call('HDEL', bytes, player)
  end
  if expiry then redis.call('ZREM', expiry, player) end
  redis.call('DEL', queue)
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""

# Publish to the player's channel; if no node holds them but they were seen lately, queue it.
# KEYS: expiry, bytes, senders, total, seen, queue. ARGV: prefix of queues, channel, payload,
# item, player, sender, max per player, max per sender, max bytes, ttl ms, purge batch.
# Returns 0 unknown, 1 sent, 2 queued, 3 mailbox full, 4 sender full.
SEND = (
    _FORGET
    + """
if redis.call('PUBLISH', ARGV[2], ARGV[3]) > 0 then return 1 end
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local books = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[11])
for _, player in ipairs(expired) do
  forget(books, ARGV[1] .. player, player)
end
local size = string.len(ARGV[4])
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
if redis.call('LLEN', KEYS[6]) >= tonumber(ARGV[7]) or total + size > tonumber(ARGV[9]) then
  return 3
end
local sender = ARGV[6]
if sender ~= '' then
  if tonumber(redis.call('HGET', KEYS[3], sender) or '0') >= tonumber(ARGV[8]) then
    return 4
  end
end
local ttl = tonumber(ARGV[10])
redis.call('RPUSH', KEYS[6], ARGV[4])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[5], size)
if sender ~= '' then redis.call('HINCRBY', KEYS[3], sender, 1) end
redis.call('INCRBY', KEYS[4], size)
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6]}) do
  redis.call('PEXPIRE', key, 2 * ttl)
end
return 2
"""
)

# Take a player's queue (if it has not expired) and forget it; then the same of the previous
# version's queue, whose items come first. A key of its accounting that is not of its kind
# (a player named like it made a list of it) is left alone; a queue that is not a list is
# that accounting, not a queue.
# KEYS: expiry, bytes, senders, total, queue, then the previous version's expiry, bytes,
# senders, total, queue. ARGV: player, max per player.
TAKE = (
    _FORGET
    + """
local function of_kind(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found == kind or found == 'none' then return key end
  return false
end
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
local items = redis.call('LRANGE', KEYS[5], 0, -1)
forget({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, KEYS[5], ARGV[1])
if not expires or tonumber(expires) <= now then items = {} end
if redis.call('TYPE', KEYS[10])['ok'] ~= 'list' then return items end
local books = {
  of_kind(KEYS[6], 'zset'), of_kind(KEYS[7], 'hash'), of_kind(KEYS[8], 'hash'),
  of_kind(KEYS[9], 'string'),
}
local live = true
if books[1] then
  local old_expires = redis.call('ZSCORE', books[1], ARGV[1])
  live = old_expires and tonumber(old_expires) > now
end
local room = tonumber(ARGV[2]) - #items
local taken = {}
if live and room > 0 then taken = redis.call('LRANGE', KEYS[10], 0, room - 1) end
forget(books, KEYS[10], ARGV[1])
for _, item in ipairs(items) do table.insert(taken, item) end
return taken
"""
)

# The previous version's keys (KEYS) that have no TTL get one (ARGV[1] ms); how many did.
RETIRE = """
local retired = 0
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, ARGV[1])
    retired = retired + 1
  end
end
return retired
"""
# Keys one SCAN step looks at (a hint Redis follows closely): a step holds Redis up for about
# half a millisecond (a million keys: 1,000 steps, median 0.6 ms, 0.7 s in all), and Redis
# serves everyone else between steps while a node walks it.
RETIRE_SCAN_COUNT = 1000

MAILBOX_SCRIPTS = {"send": SEND, "take": TAKE}
SEND_RESULTS = {
    0: Delivery.UNKNOWN_PLAYER,
    1: Delivery.SENT,
    2: Delivery.QUEUED,
    3: Delivery.MAILBOX_FULL,
    4: Delivery.SENDER_FULL,
}


class MailboxHealth:
    """Whether Redis does what the mailbox asks: while it refuses (a script, or the read of
    the accounting at a lease renewal), the tells that depended on it are lost, and
    ``problem`` says so. Logged when it starts and when it ends, not per tell.

    Each operation clears only its own failure: with one key of the wrong type, a take that
    never touches it succeeds beside sends that fail, and the state must not flap with them.
    """

    __slots__ = ("failing", "failures")

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}  # operation -> what Redis answered, while it fails
        self.failures = 0

    @property
    def problem(self) -> str | None:
        if not self.failing:
            return None
        operations = ", ".join(sorted(self.failing))
        error = next(iter(self.failing.values()))
        return (
            f"Redis refuses the mailbox ({operations}), tells to players away from other "
            f"nodes are lost: {error}"
        )

    def failed(self, operation: str, error: object) -> None:
        self.failures += 1
        if not self.failing:
            logger.error(
                "Redis refuses the mailbox: tells to players away from other nodes are lost "
                "until it works again (logged once, not per tell)",
                extra={"operation": operation, "error": str(error)},
            )
        self.failing.setdefault(operation, str(error)[:300])

    def succeeded(self, operation: str) -> None:
        if self.failing.pop(operation, None) is not None and not self.failing:
            logger.info("the Redis mailbox works again", extra={"failures": self.failures})


class RedisMailbox:
    """The keys and script arguments of what waits in Redis (the scripts are loaded by the
    backplane on each connection, their SHA1s given to ``shas``), and whether Redis runs
    them (``health``)."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.redis_prefix
        self.settings = settings
        self.queue_prefix = f"{prefix}:pending:queue:"
        self.expiry_key, self.bytes_key, self.senders_key, self.total_key = (
            f"{prefix}:pending:meta:{name}" for name in ACCOUNTS
        )
        # The previous version's, read only to take what it queued (module docstring).
        self.previous_queue_prefix = f"{prefix}:pending:"
        self.previous_accounts = tuple(f"{prefix}:pending:{name}" for name in ACCOUNTS)
        # Every key of that scheme, and of this one's spaces, which are not of it (the prefix
        # holds no glob character: Settings allows none).
        self.previous_pattern = f"{prefix}:pending:*"
        self._current_spaces = (self.queue_prefix.encode(), f"{prefix}:pending:meta:".encode())
        self._seen_prefix = f"{prefix}:seen:"
        self._ttl_ms = max(1, round(settings.pending_message_ttl * 1000))
        self.shas: dict[str, str] = {}
        self.health = MailboxHealth()

    def _accounts(self) -> tuple[str, str, str, str]:
        return (self.expiry_key, self.bytes_key, self.senders_key, self.total_key)

    def send_args(
        self, channel: str, node_id: str, player_id: str, message: Outgoing, sender: str | None
    ) -> tuple[Any, ...]:
        """EVALSHA's arguments to send ``message`` to ``player_id``, or queue it."""
        settings = self.settings
        return (
            self.shas["send"],
            6,
            *self._accounts(),
            self._seen_prefix + player_id,
            self.queue_prefix + player_id,
            self.queue_prefix,
            channel,
            encode_message(node_id, message),
            encode_pending(sender, message),
            player_id,
            sender or "",
            settings.max_pending_messages,
            settings.max_pending_per_sender,
            settings.max_pending_bytes,
            self._ttl_ms,
            PURGE_BATCH,
        )

    def take_args(self, player_id: str) -> tuple[Any, ...]:
        """EVALSHA's arguments to take what waits for ``player_id``."""
        return (
            self.shas["take"],
            10,
            *self._accounts(),
            self.queue_prefix + player_id,
            *self.previous_accounts,
            self.previous_queue_prefix + player_id,
            player_id,
            self.settings.max_pending_messages,
        )

    def previous_keys(self, scanned: list[bytes]) -> list[bytes]:
        """Those of ``scanned`` (keys matching ``previous_pattern``) that are the previous
        version's: not in this version's spaces."""
        return [key for key in scanned if not key.startswith(self._current_spaces)]

    def retire_args(self, keys: list[bytes]) -> tuple[Any, ...]:
        """EVAL's arguments to give those of the previous version's ``keys`` left without a
        TTL one (twice ``pending_message_ttl``, as it gave them)."""
        return (RETIRE, len(keys), *keys, 2 * self._ttl_ms)

    def answered(self, sha: object, reply: object) -> bool:
        """Record what Redis answered to a run of one of the scripts (``sha``, its SHA1; a
        ``ResponseError`` when it refused); whether ``sha`` is one of them."""
        operation = next((name for name, known in self.shas.items() if known == sha), None)
        if operation is None:
            return False
        if isinstance(reply, ResponseError):
            self.health.failed(operation, reply)
        else:
            self.health.succeeded(operation)
        return True

    def counted(
        self, players: int | Exception, total: bytes | Exception | None
    ) -> tuple[int, int] | None:
        """What waits in Redis (players, bytes), from the replies to ZCARD of the expiry index
        and GET of the total; None when Redis refused them (a failure, as a script's)."""
        if isinstance(players, Exception) or isinstance(total, Exception):
            self.health.failed("count", players if isinstance(players, Exception) else total)
            return None
        if total is not None and not total.isdigit():
            self.health.failed("count", f"{self.total_key} is not a number")
            return None
        self.health.succeeded("count")
        return players, int(total or 0)

    def taken(
        self, stored: list[bytes] | None, invalid: Callable[[Invalid], None]
    ) -> list[Outgoing]:
        """The messages the take script returned, in order; one no mudgate node would have
        written goes to ``invalid`` and is skipped."""
        messages = []
        for item in stored or ():
            try:
                messages.append(decode_pending(item, self.settings.outbox_max_bytes))
            except Invalid as error:
                invalid(error)
        return messages
