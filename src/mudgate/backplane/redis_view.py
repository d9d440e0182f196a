"""What a node keeps in Redis, how it renews it, and how it reads the other nodes'.

What lives in Redis, under ``MUDGATE_REDIS_PREFIX`` (``P``), and what bounds it:

``P:node:<node>``
    The node's lease: a JSON summary (memory, connections, alerts), expiring after
    ``presence_ttl`` unless renewed every ``presence_refresh``.
``P:players:<node>``
    A hash of the node's players (room, connection times), on the same lease: a node that dies
    drops out of ``who`` and of every room within ``presence_ttl``, with nobody cleaning up.
``P:seen:<player>``
    Set when a player leaves a node, expiring after ``last_seen_ttl``: a tell to them is queued.
``P:pending:queue:<player>``, ``P:pending:meta:*``
    What was told to them meanwhile, capped per player, per sender and in bytes, and its
    accounting, in key spaces of their own (``mailbox.py``).
``P:history:meta:<topic>``, ``P:history:stream:<topic>``, ``P:history:index:*``
    Each room's and channel's position (epoch, latest offset) for a day after its last event,
    and its recent events in a stream capped like a node's own history
    (``MUDGATE_ROOM_HISTORY_*``: count, bytes, age a topic; bytes and topics in all), with
    the indexes that enforce the caps across topics (``redis_history.py``).
``P:lease:<name>``
    A game's lease (``Backplane.hold_lease``): the id of the node that holds it, expiring
    after the TTL its holder last asked for; only the holder renews it. One key per name the
    game uses, gone on its own once no node asks for it.

Every key is ``P:<kind>:<name>``, the kind one the node chose (pub/sub channels too:
``room:``, ``channel:``, ``player:``, ``node:``) and the prefix holding no ``:``, so no name a
player, room, channel or node can take makes a key of another kind; where one kind holds
several sorts of key (``pending:``) each sort has its own space as well.

Nothing read is trusted: a record no mudgate node would have written goes to ``invalid``
(which counts and logs it) and is skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from ..settings import Settings
from .base import Presence
from .mailbox import RedisMailbox
from .redis_history import RedisHistory
from .wire import (
    Invalid,
    decode_node_id,
    decode_presence,
    decode_summary,
    encode_presence,
    encode_summary,
)

__all__ = [
    "HOLD_LEASE",
    "RedisKeys",
    "hold_lease",
    "live_nodes",
    "milliseconds",
    "node_id_for",
    "read_presence",
    "read_summaries",
    "safe_url",
    "write_lease",
]

OnInvalid = Callable[[Invalid], None]

# How many of a node's players one HSET carries when it announces them all.
ANNOUNCE_BATCH = 1000

# Take a game's lease if no node holds it, or renew it if this node does: one round trip, and
# no moment where a node renews a lease that another took after its own ran out.
# KEYS: the lease. ARGV: this node's id, the TTL in milliseconds. Returns 1 if this node holds it.
HOLD_LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def node_id_for(settings: Settings) -> str:
    """The id set for this node (a worker's, say), or one unique per process: the node's
    name, its pid, and a few random bytes for restarts."""
    if settings.node_id is not None:
        return settings.node_id
    return f"{settings.node_name}-{os.getpid()}-{secrets.token_hex(3)}"


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisKeys:
    """The names of a node's keys and channels."""

    __slots__ = ("_prefix", "node_id")

    def __init__(self, prefix: str, node_id: str) -> None:
        self._prefix = prefix
        self.node_id = node_id

    def channel(self, topic: str) -> str:
        """A topic's pub/sub channel (and a node's own: ``node:<id>``)."""
        return f"{self._prefix}:{topic}"

    def topic(self, channel: bytes) -> str:
        """The topic of a channel this node subscribed to."""
        return channel[len(self._prefix) + 1 :].decode(errors="replace")

    def node(self, node_id: str) -> str:
        """A node's lease: its summary, expiring unless renewed."""
        return f"{self._prefix}:node:{node_id}"

    def players(self, node_id: str | None = None) -> str:
        """A node's players (this node's by default), on the same lease."""
        return f"{self._prefix}:players:{node_id or self.node_id}"

    def seen(self, player_id: str) -> str:
        """Set when a player leaves a node, for last_seen_ttl: a tell to them is queued."""
        return f"{self._prefix}:seen:{player_id}"

    def lease(self, name: str) -> str:
        """A game's lease: the id of the node that holds it, expiring unless renewed."""
        return f"{self._prefix}:lease:{name}"


async def hold_lease(redis: Redis, keys: RedisKeys, name: str, ttl_ms: int) -> bool:
    """Take the lease ``name`` for this node, or renew it if this node holds it, for
    ``ttl_ms``; whether this node holds it now."""
    held = await redis.eval(HOLD_LEASE, 1, keys.lease(name), keys.node_id, ttl_ms)
    return int(held) == 1


async def live_nodes(redis: Redis, keys: RedisKeys, invalid: OnInvalid) -> list[str]:
    """The nodes whose lease is current, this one included."""
    start = len(keys.node("").encode())
    nodes = []
    async for key in redis.scan_iter(match=keys.node("*"), count=1000):
        try:
            nodes.append(decode_node_id(key[start:]))
        except Invalid as error:
            invalid(error)
    return nodes


async def read_presence(
    redis: Redis, keys: RedisKeys, nodes: list[str], player_id: str | None, invalid: OnInvalid
) -> dict[str, list[Presence]]:
    """The players of ``nodes`` (or only ``player_id``, one field per node), by player id."""
    async with redis.pipeline(transaction=False) as pipe:
        for node in nodes:
            if player_id is None:
                pipe.hgetall(keys.players(node))
            else:
                pipe.hmget(keys.players(node), [player_id])
        replies = await pipe.execute()
    players: dict[str, list[Presence]] = {}
    for node, reply in zip(nodes, replies, strict=True):
        fields = reply.items() if player_id is None else [(player_id.encode(), reply[0])]
        for field, raw in fields:
            if raw is None:
                continue
            try:
                player, record = decode_presence(field, raw)
            except Invalid as error:
                invalid(error)
                continue
            players.setdefault(player, []).append(Presence(node, record.room, record.connected_at))
    return players


async def read_summaries(
    redis: Redis, keys: RedisKeys, nodes: list[str], invalid: OnInvalid
) -> list[dict[str, Any]]:
    """The latest summary of each of ``nodes``, by node id."""
    summaries = await redis.mget([keys.node(node) for node in nodes]) if nodes else []
    found = []
    for raw in summaries:
        if raw is not None:  # expired between the scan and the read
            try:
                found.append(decode_summary(raw))
            except Invalid as error:
                invalid(error)
    return sorted(found, key=lambda summary: str(summary["node"]))


async def write_lease(
    redis: Redis,
    keys: RedisKeys,
    *,
    presence: dict[str, Presence],
    summary: dict[str, Any],
    ttl_ms: int,
    mailbox: RedisMailbox,
    history: RedisHistory,
) -> tuple[int, int] | None:
    """Replace this node's player hash with ``presence`` and its lease with ``summary``, both
    for ``ttl_ms``, in one transaction; what waits in Redis for players who are away
    (players, bytes), for monitoring, or None when Redis refuses to say (the mailbox's
    failure, which does not stop the lease). The history's figures go to ``history``."""
    players = keys.players()
    records = [
        (player_id, encode_presence(seen.room, seen.connected_at))
        for player_id, seen in presence.items()
    ]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(players)
        for start in range(0, len(records), ANNOUNCE_BATCH):
            pipe.hset(players, mapping=dict(records[start : start + ANNOUNCE_BATCH]))
        pipe.set(keys.node(keys.node_id), encode_summary(summary), px=ttl_ms)
        pipe.pexpire(players, ttl_ms)
        pipe.zcard(mailbox.expiry_key)
        pipe.get(mailbox.total_key)
        pipe.zcard(history.topics_key)
        pipe.get(history.bytes_key)
        *written, pending_players, pending_bytes, topics, total = await pipe.execute(
            raise_on_error=False
        )
    for reply in written:
        if isinstance(reply, Exception):
            raise reply
    history.counted(topics, total)
    return mailbox.counted(pending_players, pending_bytes)
