"""The Redis backplane: several mudgate processes behave as one gateway (DESIGN.md section 6).

What lives in Redis, under ``MUDGATE_REDIS_PREFIX`` (``P``), and what bounds it:

``P:node:<node>``
    The node's lease: a JSON summary (memory, connections, alerts), expiring after
    ``presence_ttl`` unless renewed every ``presence_refresh``.
``P:players:<node>``
    A hash of the node's players (room, connection times), on the same lease: a node that dies
    drops out of ``who`` and of every room within ``presence_ttl``, with nobody cleaning up.
``P:seen:<player>``
    Set when a player leaves a node, expiring after ``last_seen_ttl``: a tell to them is queued.
``P:pending:*``
    What was told to them meanwhile, capped per player, per sender and in bytes, with its
    accounting (``mailbox.py``).

Room, channel and player topics are pub/sub channels ``P:<topic>``; a node subscribes to one
only while it has a local listener. A message reaches local listeners at once and is published
once, tagged with the node's id, so the publishing node skips its own echo.

Nothing read from Redis is trusted (``wire.py``): a record no mudgate node would have written
is counted, logged once, and skipped. Nothing a player does waits for Redis: writes go through
one bounded queue, drained by one task. While Redis is away the node serves its own players,
drops (and counts) what was meant for the others, and reconnects with capped, jittered
backoff; on return it subscribes again and announces its players afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..protocol import Outgoing
from ..settings import Settings
from .base import BackplaneStats, Delivery, HealthProvider, Node, Presence
from .mailbox import MAILBOX_SCRIPTS, SEND_RESULTS, RedisMailbox
from .topic import Topic, player_of, player_topic
from .wire import (
    EVICT,
    MESSAGE,
    Invalid,
    decode_eviction,
    decode_message,
    decode_node_id,
    decode_pending,
    decode_presence,
    decode_summary,
    encode_eviction,
    encode_message,
    encode_presence,
    encode_summary,
)

__all__ = ["RedisBackplane"]

logger = logging.getLogger("mudgate.backplane")

# The first wait before reaching Redis again; doubled up to backplane_retry_max.
FIRST_RETRY_SECONDS = 0.1
# Commands written to Redis in one round trip.
WRITE_BATCH = 512
# How many of a node's players one HSET carries when it announces them all.
ANNOUNCE_BATCH = 1000

# PINGs on the subscriber connection still waiting for their PONG; past it the connection is
# taken for dead (and every waiter released), so the list of waiters cannot grow.
MAX_UNANSWERED_PINGS = 100

SEP = b"\n"

Command = tuple[Any, ...]
T = TypeVar("T")
# Errors that mean Redis is away (or misbehaving): the node goes on without it.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def _node_id(settings: Settings) -> str:
    """The id set for this node (a worker's, say), or one unique per process: the node's
    name, its pid, and a few random bytes for restarts."""
    if settings.node_id is not None:
        return settings.node_id
    return f"{settings.node_name}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisBackplane:
    """A ``Backplane`` through Redis pub/sub, with presence as leases."""

    def __init__(
        self,
        settings: Settings,
        *,
        node_id: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.backplane is not None
        self.settings = settings
        self.url = settings.backplane
        self.node_id = node_id or _node_id(settings)
        self.wall_clock = wall_clock
        self._prefix = settings.redis_prefix
        # Always subscribed, so the reader has a subscription to read from even when this
        # node has no players.
        self._own_channel = self._channel(f"node:{self.node_id}")
        self._node: Node | None = None
        self._health: HealthProvider = dict

        # Topics with a local listener: mirrors the hub's room_subscriptions and players, so
        # it is bounded by them. What changed since the subscriber last caught up:
        self.topics: set[Topic] = set()
        self._topic_changes: dict[Topic, bool] = {}
        # Who waits for the subscriptions asked for so far to be in force: resolved when the
        # PONG to a PING sent on the subscriber connection after them comes back.
        self._barriers: list[asyncio.Future[None]] = []
        self._pings: deque[list[asyncio.Future[None]]] = deque()
        # Commands waiting to be written; while Redis is away nothing is queued.
        self._writes: deque[Command] = deque()
        self._wake = asyncio.Event()

        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._mailbox = RedisMailbox(settings)
        # What waits in Redis for players who are away, as last read (at each renewal).
        self.pending_players = 0
        self.pending_bytes = 0
        self._up = False
        self._problem: str | None = "not connected yet"
        self._task: asyncio.Task[None] | None = None

        # Counters for monitoring.
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0
        self.errors = 0
        # Records read from Redis that no mudgate node would have written, by kind.
        self.invalid: Counter[str] = Counter()

    # The Backplane protocol: lifecycle

    async def start(self, node: Node, health: HealthProvider) -> None:
        """Connect (waiting at most ``backplane_timeout`` for the first attempt) and keep
        connecting in the background: an unreachable Redis does not stop the node, which
        serves its own players meanwhile."""
        self._node = node
        self._health = health
        first_attempt = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(first_attempt), name="mudgate-backplane"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.backplane_timeout * 2):
                await first_attempt.wait()

    async def close(self) -> None:
        """Write what is still queued, withdraw this node's lease at once (rather than
        lingering in ``who`` until it runs out), and disconnect."""
        if self._task is not None:
            self._task.cancel("mudgate: shutting down")
            await asyncio.wait((self._task,))
            self._task = None
        if self._redis is not None and self._up:
            with contextlib.suppress(*REDIS_ERRORS):
                async with asyncio.timeout(self.settings.backplane_timeout):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for command in self._writes:
                            pipe.execute_command(*command)
                        pipe.delete(self._node_key(self.node_id), self._players_key())
                        await pipe.execute(raise_on_error=False)
        self._writes.clear()
        self._up = False
        self._problem = "closed"
        await self._disconnect()
        self._node = None

    @property
    def clustered(self) -> bool:
        return self._up

    @property
    def problem(self) -> str | None:
        return self._problem

    # Pub/sub

    def publish(self, topic: Topic, message: Outgoing) -> None:
        self._write(("PUBLISH", self._channel(topic), encode_message(self.node_id, message)))
        self.published += 1

    def subscribe(self, topic: Topic) -> None:
        self.topics.add(topic)
        self._changed(topic, True)

    def unsubscribe(self, topic: Topic) -> None:
        self.topics.discard(topic)
        self._changed(topic, False)

    def _changed(self, topic: Topic, listening: bool) -> None:
        # Only for a live subscriber connection: a new one subscribes to all of `topics` at
        # once, so nothing accumulates while Redis is away.
        if self._pubsub is not None:
            self._topic_changes[topic] = listening
            self._wake.set()

    async def settled(self) -> None:
        if not self._up:
            return
        barrier = asyncio.get_running_loop().create_future()
        self._barriers.append(barrier)
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.backplane_timeout):
                await asyncio.shield(barrier)

    # Presence

    def announce(self, player_id: str, presence: Presence | None) -> None:
        players = self._players_key()
        if presence is None:
            self._write(("HDEL", players, player_id))
            self._write(
                ("SET", self._seen_key(player_id), b"1", "PX", _ms(self.settings.last_seen_ttl))
            )
        else:
            record = encode_presence(presence.room, presence.connected_at)
            self._write(("HSET", players, player_id, record))
            self._write(("PEXPIRE", players, _ms(self.settings.presence_ttl)))

    def evict(self, node_id: str, player_id: str, count: int) -> None:
        payload = encode_eviction(self.node_id, node_id, count)
        self._write(("PUBLISH", self._channel(player_topic(player_id)), payload))

    # Direct messages and what waits for a player

    def route(self, player_id: str, message: Outgoing, sender: str | None) -> None:
        self._write(("EVALSHA", *self._send_args(player_id, message, sender)))

    async def send_direct(
        self, player_id: str, message: Outgoing, sender: str | None
    ) -> Delivery | None:
        args = self._send_args(player_id, message, sender)
        result = await self._call(lambda redis: redis.evalsha(*args))
        return None if result is None else SEND_RESULTS[int(result)]

    def _send_args(self, player_id: str, message: Outgoing, sender: str | None) -> Command:
        channel = self._channel(player_topic(player_id))
        return self._mailbox.send_args(channel, self.node_id, player_id, message, sender)

    async def take_pending(self, player_id: str) -> list[Outgoing]:
        args = self._mailbox.take_args(player_id)
        stored = await self._call(lambda redis: redis.evalsha(*args))
        messages = []
        for item in stored or ():
            try:
                messages.append(decode_pending(item, self.settings.outbox_max_bytes))
            except Invalid as error:
                self._invalid(error)
        return messages

    # The cluster view

    async def cluster_presence(
        self, player_id: str | None = None
    ) -> dict[str, list[Presence]] | None:
        async def read(redis: Redis) -> dict[str, list[Presence]]:
            others = [node for node in await self._live_nodes(redis) if node != self.node_id]
            async with redis.pipeline(transaction=False) as pipe:
                for node in others:
                    if player_id is None:
                        pipe.hgetall(self._players_key(node))
                    else:  # one field per node, not every node's every player
                        pipe.hmget(self._players_key(node), [player_id])
                replies = await pipe.execute()
            players: dict[str, list[Presence]] = {}
            for node, reply in zip(others, replies, strict=True):
                fields = reply.items() if player_id is None else [(player_id.encode(), reply[0])]
                for field, raw in fields:
                    if raw is None:
                        continue
                    try:
                        player, record = decode_presence(field, raw)
                    except Invalid as error:
                        self._invalid(error)
                        continue
                    players.setdefault(player, []).append(
                        Presence(node, record.room, record.connected_at)
                    )
            return players

        return await self._call(read)

    async def nodes(self) -> list[dict[str, Any]] | None:
        async def read(redis: Redis) -> list[dict[str, Any]]:
            nodes = await self._live_nodes(redis)
            summaries = await redis.mget([self._node_key(node) for node in nodes]) if nodes else []
            found = []
            for raw in summaries:
                if raw is not None:  # expired between the scan and the read
                    try:
                        found.append(decode_summary(raw))
                    except Invalid as error:
                        self._invalid(error)
            return sorted(found, key=lambda summary: str(summary["node"]))

        return await self._call(read)

    async def _live_nodes(self, redis: Redis) -> list[str]:
        start = len(self._node_key("").encode())
        nodes = []
        async for key in redis.scan_iter(match=self._node_key("*"), count=1000):
            try:
                nodes.append(decode_node_id(key[start:]))
            except Invalid as error:
                self._invalid(error)
        return nodes

    def stats(self) -> BackplaneStats:
        return BackplaneStats(
            up=self._up,
            subscriptions=len(self.topics),
            queue=len(self._writes),
            pending_players=self.pending_players,
            pending_bytes=self.pending_bytes,
            published=self.published,
            received=self.received,
            dropped=self.dropped,
            reconnects=self.reconnects,
            invalid=sum(self.invalid.values()),
        )

    def _invalid(self, error: Invalid) -> None:
        """Count a record no mudgate node would have written; log the first of each kind."""
        if not self.invalid[error.kind]:
            logger.warning(
                "ignored a record in Redis that no mudgate node wrote (further ones are only "
                "counted: mudgate_backplane_invalid_total)",
                extra={"kind": error.kind, "error": str(error)},
            )
        self.invalid[error.kind] += 1

    # Keys and payloads

    def _channel(self, topic: str) -> str:
        return f"{self._prefix}:{topic}"

    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    def _players_key(self, node_id: str | None = None) -> str:
        return f"{self._prefix}:players:{node_id or self.node_id}"

    def _seen_key(self, player_id: str) -> str:
        return f"{self._prefix}:seen:{player_id}"

    def _safe_url(self) -> str:
        """The URL without its password, for logs."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    # The connection: one task connects, subscribes, announces, writes, reads and renews

    def _write(self, command: Command) -> None:
        if not self._up:
            self.dropped += 1  # Redis is away: what was meant for other nodes is lost
            return
        if len(self._writes) >= self.settings.backplane_queue_size:
            self._writes.popleft()
            self.dropped += 1
        self._writes.append(command)
        self._wake.set()

    async def _call(self, operation: Callable[[Redis], Awaitable[T]]) -> T | None:
        """Run a request against Redis, or answer None while it is away or when it fails."""
        redis = self._redis
        if not self._up or redis is None:
            return None
        try:
            async with asyncio.timeout(self.settings.backplane_timeout):
                return await operation(redis)
        except REDIS_ERRORS as error:
            self.errors += 1
            logger.warning("Redis request failed: %s", error or type(error).__name__)
            return None

    async def _run(self, first_attempt: asyncio.Event) -> None:
        wait = FIRST_RETRY_SECONDS
        while True:
            try:
                await self._connect()
            except Exception as error:  # whatever it was, the node goes on without Redis
                self._went_away(error)
            else:
                wait = FIRST_RETRY_SECONDS
                first_attempt.set()
                self._went_away(await self._serve())
            first_attempt.set()
            await self._disconnect()
            # Full jitter, so nodes that lost Redis together do not return in lockstep.
            await asyncio.sleep(random.uniform(wait / 2, wait))
            wait = min(wait * 2, self.settings.backplane_retry_max)

    async def _connect(self) -> None:
        timeout = self.settings.backplane_timeout
        self._redis = Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        async with asyncio.timeout(timeout):
            await self._redis.ping()
            for name, script in MAILBOX_SCRIPTS.items():
                self._mailbox.shas[name] = await self._redis.script_load(script)
            self._pubsub = self._redis.pubsub()
            # Everything this node listens to, in one command; what changes from here on is
            # in _topic_changes, for the writer.
            self._topic_changes.clear()
            await self._pubsub.subscribe(
                self._own_channel, *(self._channel(topic) for topic in self.topics)
            )
            # From here on writes are queued: they run after the announcement below, so a
            # player who comes or goes meanwhile is neither lost nor resurrected.
            self._up = True
            await self._announce_all(self._redis)
        if self._problem != "not connected yet":
            self.reconnects += 1
        self._problem = None
        logger.info(
            "Redis backplane connected",
            extra={"url": self._safe_url(), "node": self.node_id, "topics": len(self.topics)},
        )

    async def _announce_all(self, redis: Redis) -> None:
        """Replace this node's lease and player hash with what it holds now (on connecting,
        and at every renewal)."""
        assert self._node is not None
        players = self._players_key()
        records = [
            (player_id, encode_presence(presence.room, presence.connected_at))
            for player_id, presence in self._node.presence().items()
        ]
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(players)
            for start in range(0, len(records), ANNOUNCE_BATCH):
                pipe.hset(players, mapping=dict(records[start : start + ANNOUNCE_BATCH]))
            self._renew(pipe)
            *_, pending_players, pending_bytes = await pipe.execute()
        self.pending_players = int(pending_players)
        self.pending_bytes = int(pending_bytes or 0)

    def _renew(self, pipe: Any) -> None:
        assert self._node is not None
        ttl = _ms(self.settings.presence_ttl)
        summary = {
            "node": self.node_id,
            "updated_at": self.wall_clock(),
            **self._node.status(),
            **self._health(),
        }
        pipe.set(self._node_key(self.node_id), encode_summary(summary), px=ttl)
        pipe.pexpire(self._players_key(), ttl)
        # What waits in Redis for players who are away, for monitoring.
        pipe.zcard(self._mailbox.expiry_key)
        pipe.get(self._mailbox.total_key)

    async def _serve(self) -> BaseException:
        """Read, write and renew until one of them fails; returns what failed."""
        tasks = [
            asyncio.create_task(self._read(), name="mudgate-backplane-read"),
            asyncio.create_task(self._flush(), name="mudgate-backplane-write"),
            asyncio.create_task(self._renew_lease(), name="mudgate-backplane-lease"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        error = next(iter(done)).exception()
        assert error is not None  # the three loops only end by failing
        return error

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            if message["type"] == "message":
                self._received(message["channel"], message["data"])
            elif message["type"] == "pong" and self._pings:
                _resolve(self._pings.popleft())

    def _received(self, channel: bytes, payload: bytes) -> None:
        node = self._node
        kind, origin_and_rest = payload[:1], payload[1:]
        origin, _, rest = origin_and_rest.partition(SEP)
        if node is None or origin == self.node_id.encode():
            return  # our own message: delivered locally when published
        # Only channels this node subscribed to arrive, so the topic is one of its own.
        topic = Topic(channel[len(self._prefix) + 1 :].decode(errors="replace"))
        try:
            if kind == MESSAGE:
                message = decode_message(rest, self.settings.outbox_max_bytes)
                self.received += 1
                node.deliver(topic, message)
            elif kind == EVICT and (player_id := player_of(topic)) is not None:
                target, count = decode_eviction(rest)
                if target == self.node_id.encode():
                    self.received += 1
                    node.evict(player_id, count)
            else:
                raise Invalid("message", f"not a message nor an eviction for this topic: {kind!r}")
        except Invalid as error:
            self._invalid(error)

    async def _flush(self) -> None:
        assert self._redis is not None
        assert self._pubsub is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._topic_changes:
                changes, self._topic_changes = self._topic_changes, {}
                add = [self._channel(topic) for topic, on in changes.items() if on]
                remove = [self._channel(topic) for topic, on in changes.items() if not on]
                if add:
                    await self._pubsub.subscribe(*add)
                if remove:
                    await self._pubsub.unsubscribe(*remove)
            if self._barriers:
                if len(self._pings) >= MAX_UNANSWERED_PINGS:
                    # Alive enough to take commands, deaf to pub/sub: start over.
                    raise ConnectionError("the subscriber connection stopped answering PINGs")
                # Redis answers in order: once this PING's PONG is back, so are the above.
                self._pings.append(self._barriers)
                self._barriers = []
                await self._pubsub.ping()
            while self._writes:
                batch = [self._writes.popleft() for _ in range(min(WRITE_BATCH, len(self._writes)))]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for command in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
                for result in results:
                    if isinstance(result, Exception):
                        self.errors += 1
                        logger.warning("Redis refused a write: %s", result)

    async def _renew_lease(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self.settings.presence_refresh)
            # The whole hash, not just its TTL: a presence write the full queue dropped is
            # made good here rather than lingering (a ghost in `who`) until a reconnect.
            async with asyncio.timeout(self.settings.backplane_timeout):
                await self._announce_all(self._redis)

    def _went_away(self, error: BaseException) -> None:
        reason = str(error) or type(error).__name__
        if not isinstance(error, REDIS_ERRORS):
            logger.error("Redis backplane failed", exc_info=error)
        if self._up or self._problem == "not connected yet":
            logger.warning(
                "Redis backplane unreachable: serving local players only, retrying",
                extra={"url": self._safe_url(), "error": reason},
            )
        self._up = False
        self._problem = f"Redis at {self._safe_url()} unreachable: {reason}"
        # Nothing queued for Redis outlives the connection it was meant for.
        self.dropped += len(self._writes)
        self._writes.clear()
        self._topic_changes.clear()
        # Nobody waits for subscriptions on a connection that is gone.
        _resolve(self._barriers)
        self._barriers = []
        while self._pings:
            _resolve(self._pings.popleft())

    async def _disconnect(self) -> None:
        pubsub, redis = self._pubsub, self._redis
        self._pubsub = self._redis = None
        for closing in (pubsub, redis):
            if closing is not None:
                with contextlib.suppress(*REDIS_ERRORS):
                    await closing.aclose()


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
