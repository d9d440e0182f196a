"""What waits in Redis for players who are away, under the same caps as a node's own
``Mailboxes``: per player, per sender and, all together, in bytes; past a cap a message is
refused and nothing queued is pushed out.

Every change runs in one Lua script, so the accounting beside the queues never drifts from
them. Under ``MUDGATE_REDIS_PREFIX`` (``P``):

``P:pending:<player>``
    The player's queue (a list), oldest first.
``P:pending:expiry``
    A sorted set: each player with a queue, scored by when it expires (its last push plus
    ``pending_message_ttl``). Each push first forgets up to ``PURGE_BATCH`` expired queues,
    so expiry costs O(expired) and needs no sweeper.
``P:pending:bytes``, ``P:pending:senders``, ``P:pending:total``
    The bytes of each player's queue, the messages each sender has queued, and the bytes of
    all queues together.

Every key also expires on its own (after twice the TTL, renewed at each push), so a Redis
nobody pushes to any more empties itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import Outgoing
from ..settings import Settings
from .base import Delivery
from .wire import Invalid, decode_pending, encode_message, encode_pending

__all__ = ["MAILBOX_SCRIPTS", "SEND_RESULTS", "RedisMailbox"]

# Expired queues forgotten per push, at most.
PURGE_BATCH = 16

# Forget a player's queue and what it counted for (KEYS[1..4]: expiry, bytes, senders, total;
# ARGV[1]: the key prefix of queues).
_FORGET = """
local function forget(player)
  local queue = ARGV[1] .. player
  for _, item in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    local sender = string.match(item, '^([^\\n]*)\\n')
    if sender and sender ~= '' then
      if redis.call('HINCRBY', KEYS[3], sender, -1) <= 0 then
        redis.call('HDEL', KEYS[3], sender)
      end
    end
  end
  local size = tonumber(redis.call('HGET', KEYS[2], player) or '0')
  if size > 0 then redis.call('DECRBY', KEYS[4], size) end
  redis.call('HDEL', KEYS[2], player)
  redis.call('ZREM', KEYS[1], player)
  redis.call('DEL', queue)
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""

# Publish to the player's channel; if no node holds them but they were seen lately, queue it.
# KEYS: expiry, bytes, senders, total, seen, queue. ARGV: prefix, channel, payload, item,
# player, sender, max per player, max per sender, max bytes, ttl ms, purge batch.
# Returns 0 unknown, 1 sent, 2 queued, 3 mailbox full, 4 sender full.
SEND = (
    _FORGET
    + """
if redis.call('PUBLISH', ARGV[2], ARGV[3]) > 0 then return 1 end
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[11])
for _, player in ipairs(expired) do
  forget(player)
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

# Take a player's queue (if it has not expired) and forget it.
# KEYS: expiry, bytes, senders, total, queue. ARGV: prefix, player.
TAKE = (
    _FORGET
    + """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[2])
local items = redis.call('LRANGE', KEYS[5], 0, -1)
forget(ARGV[2])
if not expires or tonumber(expires) <= now then return {} end
return items
"""
)

MAILBOX_SCRIPTS = {"send": SEND, "take": TAKE}
SEND_RESULTS = {
    0: Delivery.UNKNOWN_PLAYER,
    1: Delivery.SENT,
    2: Delivery.QUEUED,
    3: Delivery.MAILBOX_FULL,
    4: Delivery.SENDER_FULL,
}


class RedisMailbox:
    """The keys and script arguments of what waits in Redis (the scripts are loaded by the
    backplane on each connection, their SHA1s given to ``loaded``)."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.redis_prefix
        self.settings = settings
        self.queue_prefix = f"{prefix}:pending:"
        self.expiry_key = f"{prefix}:pending:expiry"
        self.bytes_key = f"{prefix}:pending:bytes"
        self.senders_key = f"{prefix}:pending:senders"
        self.total_key = f"{prefix}:pending:total"
        self._seen_prefix = f"{prefix}:seen:"
        self.shas: dict[str, str] = {}

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
            max(1, round(settings.pending_message_ttl * 1000)),
            PURGE_BATCH,
        )

    def take_args(self, player_id: str) -> tuple[Any, ...]:
        """EVALSHA's arguments to take what waits for ``player_id``."""
        return (
            self.shas["take"],
            5,
            *self._accounts(),
            self.queue_prefix + player_id,
            self.queue_prefix,
            player_id,
        )

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
