"""The Redis backplane: several mudgate processes behave as one gateway (DESIGN.md section 6).

What lives in Redis, under ``MUDGATE_REDIS_PREFIX``, and what bounds it: redis_view.py.
Room, channel and player topics are pub/sub channels; a node subscribes to one only while it
has a local listener (subscriptions.py). The hub delivers to its own listeners; a message is
published once, tagged with the node's id, so the publishing node skips its own echo. Room and
channel events kept for resumes are the exception: Redis numbers them (redis_history.py) and
every node delivers them from Redis, the publishing node included; what that node sends its
own players after them waits for them (``after_kept``, kept_order.py).

Nothing read from Redis is trusted (``wire.py``): a record no mudgate node would have written
is counted, logged once, and skipped. Nothing a player does waits for Redis: writes go through
one bounded queue, drained by one task (writes.py). While Redis is away the node serves its
own players, drops (and counts) what was meant for the others, and reconnects with capped,
jittered backoff; on return it subscribes again and announces its players afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from ..protocol import Outgoing
from ..settings import Settings
from ..tasks import BackgroundTask, cancel_and_wait
from .base import BackplaneStats, Delivery, HealthProvider, Node, Presence
from .history import Recovery
from .kept_order import Deliver
from .mailbox import MAILBOX_SCRIPTS, RETIRE_SCAN_COUNT, SEND_RESULTS, RedisMailbox
from .redis_history import KEEP, RedisHistory
from .redis_view import (
    RedisKeys,
    hold_lease,
    live_nodes,
    milliseconds,
    node_id_for,
    read_presence,
    read_summaries,
    safe_url,
    write_lease,
)
from .subscriptions import Subscriptions
from .topic import Topic, player_of, player_topic
from .wire import (
    EVICT,
    KEPT,
    MESSAGE,
    Invalid,
    decode_eviction,
    decode_kept,
    decode_message,
    decode_name,
    encode_eviction,
    encode_message,
    encode_presence,
)
from .writes import Command, WriteQueue

__all__ = ["RedisBackplane"]

logger = logging.getLogger("mudgate.backplane")

# The first wait before reaching Redis again; doubled up to backplane_retry_max.
FIRST_RETRY_SECONDS = 0.1

SEP = b"\n"

T = TypeVar("T")
# Errors that mean Redis is away (or misbehaving): the node goes on without it.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class RedisBackplane:
    """A ``Backplane`` through Redis pub/sub, with presence as leases."""

    def __init__(
        self,
        settings: Settings,
        *,
        node_id: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.backplane is not None
        self.settings = settings
        self.url = settings.backplane
        self.node_id = node_id or node_id_for(settings)
        self.wall_clock = wall_clock
        # Always subscribed, so the reader has a subscription to read from even when this
        # node has no players.
        self._keys = RedisKeys(settings.redis_prefix, self.node_id)
        self._own_channel = self._keys.channel(f"node:{self.node_id}")
        self._node: Node | None = None
        self._health: HealthProvider = dict

        # Topics with a local listener (mirroring the hub's, so bounded by them).
        self.subscriptions = Subscriptions(self._keys.channel)
        self._mailbox = RedisMailbox(settings)
        self._history = RedisHistory(
            settings,
            self.node_id,
            lost=self._unkept,
            listening=self.subscriptions.topics.__contains__,
            wall_clock=wall_clock,
            clock=clock,
        )
        # Commands waiting to be written; open (and queueing) only while Redis is up. What
        # Redis answers to the mailbox's and the history's scripts among them goes to them,
        # and the history hears of each of its commands dropped unwritten.
        self._writes = WriteQueue(
            settings.backplane_queue_size,
            settings.backplane_queue_bytes,
            self._replied,
            self._history.dropped_command,
        )

        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        # What waits in Redis for players who are away, as last read (at each renewal).
        self.pending_players = 0
        self.pending_bytes = 0
        self._problem: str | None = "not connected yet"
        self._task = BackgroundTask("mudgate-backplane")

        # Counters for monitoring.
        self.published = 0
        self.received = 0
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
        self._task.start(self._run(first_attempt))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.backplane_timeout * 2):
                await first_attempt.wait()

    async def close(self) -> None:
        """Write what is still queued, withdraw this node's lease at once (rather than
        lingering in ``who`` until it runs out), and disconnect."""
        await self._task.stop()
        if self._redis is not None and self._writes.open:
            with contextlib.suppress(*REDIS_ERRORS):
                async with asyncio.timeout(self.settings.backplane_timeout):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for command in self._writes.take_all():
                            pipe.execute_command(*command)
                        pipe.delete(self._keys.node(self.node_id), self._keys.players())
                        await pipe.execute(raise_on_error=False)
        self._writes.close()
        self._history.release_all()
        self._problem = "closed"
        await self._disconnect()
        self._node = None

    @property
    def clustered(self) -> bool:
        return self._writes.open

    @property
    def problem(self) -> str | None:
        """Why Redis cannot be reached, or else why the mailbox or the history fails while
        Redis refuses it (the node stays in the cluster; tells to players away from other
        nodes are lost, or room and channel events go out unnumbered and are not kept)."""
        return self._problem or self._mailbox.health.problem or self._history.problem

    # Pub/sub

    def publish(self, topic: Topic, message: Outgoing) -> None:
        self._write(("PUBLISH", self._keys.channel(topic), encode_message(self.node_id, message)))
        self.published += 1

    @property
    def keeps_history(self) -> bool:
        """While Redis can be reached (and history is on): Redis numbers and keeps room and
        channel events for every node (redis_history.py)."""
        return self._writes.open and self._history.enabled and self._history.sha is not None

    def publish_kept(self, topic: Topic, message: Outgoing) -> None:
        command = self._history.keep(topic, self._keys.channel(topic), message)
        if command is not None:
            self._write(command)
            self.published += 1

    def after_kept(self, deliver: Deliver) -> None:
        self._history.after_kept(deliver)

    async def recover(self, topic: Topic, offset: int, epoch: str) -> Recovery | None:
        async def read(redis: Redis) -> Recovery:
            return await self._history.recover(redis, topic, offset, epoch, self._invalid)

        return await self._call(read)

    def _unkept(self, topic: Topic, message: Outgoing, refused: bool) -> None:
        """A kept event Redis did not number: delivered here as it is; when Redis refused
        only the script, published to the others as it is, too."""
        if self._node is not None:
            self._node.deliver(topic, message)
        if refused:
            self.publish(topic, message)

    def subscribe(self, topic: Topic) -> None:
        self.subscriptions.listen(topic, True)
        self._writes.wake.set()

    def unsubscribe(self, topic: Topic) -> None:
        self.subscriptions.listen(topic, False)
        self._writes.wake.set()

    async def settled(self) -> None:
        if not self._writes.open:
            return
        barrier = self.subscriptions.barrier()
        self._writes.wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.backplane_timeout):
                await asyncio.shield(barrier)

    # Presence

    def announce(self, player_id: str, presence: Presence | None, left_room: str = "") -> None:
        players = self._keys.players()
        if presence is None:
            self._write(("HDEL", players, player_id))
            self._write(
                (
                    "SET",
                    self._keys.seen(player_id),
                    # The room they left from: the one a resume may put them back in.
                    left_room.encode() or b"1",
                    "PX",
                    milliseconds(self.settings.last_seen_ttl),
                )
            )
        else:
            record = encode_presence(presence.room, presence.connected_at)
            self._write(("HSET", players, player_id, record))
            self._write(("PEXPIRE", players, milliseconds(self.settings.presence_ttl)))

    async def last_room(self, player_id: str) -> str | None:
        async def read(redis: Redis) -> Any:
            return await redis.get(self._keys.seen(player_id))

        raw = await self._call(read)
        if not isinstance(raw, bytes) or raw == b"1":
            return None
        try:
            return decode_name(raw, "room")
        except Invalid as error:
            self._invalid(error)
            return None

    def evict(self, node_id: str, player_id: str, count: int) -> None:
        payload = encode_eviction(self.node_id, node_id, count)
        self._write(("PUBLISH", self._keys.channel(player_topic(player_id)), payload))

    # Direct messages and what waits for a player

    def route(self, player_id: str, message: Outgoing, sender: str | None) -> None:
        self._write(("EVALSHA", *self._send_args(player_id, message, sender)))

    async def send_direct(
        self, player_id: str, message: Outgoing, sender: str | None
    ) -> Delivery | None:
        result = await self._script(self._send_args(player_id, message, sender))
        return None if result is None else SEND_RESULTS[int(result)]

    def _send_args(self, player_id: str, message: Outgoing, sender: str | None) -> Command:
        channel = self._keys.channel(player_topic(player_id))
        return self._mailbox.send_args(channel, self.node_id, player_id, message, sender)

    async def take_pending(self, player_id: str) -> list[Outgoing]:
        stored = await self._script(self._mailbox.take_args(player_id))
        return self._mailbox.taken(stored, self._invalid)

    async def _script(self, args: Command) -> Any:
        """Run one of the mailbox's scripts (EVALSHA's ``args``); None while Redis is away or
        when it refuses the script, which the mailbox records (logged once, not per tell)."""

        async def run(redis: Redis) -> Any:
            try:
                result = await redis.evalsha(*args)
            except ResponseError as error:
                self._mailbox.answered(args[0], error)
                return None
            self._mailbox.answered(args[0], result)
            return result

        return await self._call(run)

    def _replied(self, command: Command, reply: object) -> bool:
        """A queued write's answer: the mailbox's scripts' (``route``) go to the mailbox, the
        history's (``publish_kept``) to the history."""
        return command[0] == "EVALSHA" and (
            self._mailbox.answered(command[1], reply) or self._history.answered(command, reply)
        )

    # The cluster view

    async def cluster_presence(
        self, player_id: str | None = None
    ) -> dict[str, list[Presence]] | None:
        async def read(redis: Redis) -> dict[str, list[Presence]]:
            nodes = await live_nodes(redis, self._keys, self._invalid)
            others = [node for node in nodes if node != self.node_id]
            return await read_presence(redis, self._keys, others, player_id, self._invalid)

        return await self._call(read)

    async def nodes(self) -> list[dict[str, Any]] | None:
        async def read(redis: Redis) -> list[dict[str, Any]]:
            nodes = await live_nodes(redis, self._keys, self._invalid)
            return await read_summaries(redis, self._keys, nodes, self._invalid)

        return await self._call(read)

    # A game's leases

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        """``Backplane.hold_lease``: ``P:lease:<name>`` holds the id of the node that holds
        it, taken with ``SET NX PX`` and renewed (``PEXPIRE``) only by that node, in one
        script. While this node cannot reach Redis (or Redis fails) it holds no lease: a node
        that can may hold it, and if none can, a timer that runs only under its lease pauses
        rather than running on every node at once."""

        async def hold(redis: Redis) -> bool:
            return await hold_lease(redis, self._keys, name, milliseconds(ttl_seconds))

        return bool(await self._call(hold))

    def stats(self) -> BackplaneStats:
        return BackplaneStats(
            up=self._writes.open,
            subscriptions=len(self.subscriptions),
            queue=len(self._writes),
            pending_players=self.pending_players,
            pending_bytes=self.pending_bytes,
            published=self.published,
            received=self.received,
            dropped=self._writes.dropped,
            reconnects=self.reconnects,
            invalid=sum(self.invalid.values()),
            history_kept=self._history.kept,
            history_dropped=self._history.dropped,
            history_topics=self._history.topics,
            history_bytes=self._history.bytes,
            order_waiting=self._history.waiting,
            order_unordered=self._history.unordered,
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

    # The connection: one task connects, subscribes, announces, writes, reads and renews

    def _write(self, command: Command) -> None:
        self._writes.put(command)

    async def _call(self, operation: Callable[[Redis], Awaitable[T]]) -> T | None:
        """Run a request against Redis, or answer None while it is away or when it fails."""
        redis = self._redis
        if not self._writes.open or redis is None:
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
            # Every script in one round trip.
            async with self._redis.pipeline(transaction=False) as pipe:
                for script in (*MAILBOX_SCRIPTS.values(), KEEP):
                    pipe.script_load(script)
                *mailbox_shas, self._history.sha = await pipe.execute()
            self._mailbox.shas.update(zip(MAILBOX_SCRIPTS, mailbox_shas, strict=True))
            self._pubsub = self._redis.pubsub()
            # Everything this node listens to, in one command; what changes from here on
            # waits for the writer.
            await self.subscriptions.subscribe_all(self._pubsub, self._own_channel)
            # From here on writes are queued: they run after the announcement below, so a
            # player who comes or goes meanwhile is neither lost nor resurrected.
            self._writes.open = True
            await self._announce_all(self._redis)
        if self._problem != "not connected yet":
            self.reconnects += 1
        self._problem = None
        logger.info(
            "Redis backplane connected",
            extra={
                "url": safe_url(self.url),
                "node": self.node_id,
                "topics": len(self.subscriptions),
            },
        )

    async def _announce_all(self, redis: Redis) -> None:
        """Replace this node's lease and player hash with what it holds now (on connecting,
        and at every renewal)."""
        assert self._node is not None
        summary = {
            "node": self.node_id,
            "updated_at": self.wall_clock(),
            **self._node.status(),
            **self._health(),
        }
        pending = await write_lease(
            redis,
            self._keys,
            presence=self._node.presence(),
            summary=summary,
            ttl_ms=milliseconds(self.settings.presence_ttl),
            mailbox=self._mailbox,
            history=self._history,
        )
        if pending is not None:  # else the mailbox failed, and says so
            self.pending_players, self.pending_bytes = pending

    async def _serve(self) -> BaseException:
        """Read, write and renew until one of them fails; returns what failed."""
        tasks = [
            asyncio.create_task(self._read(), name="mudgate-backplane-read"),
            asyncio.create_task(self._flush(), name="mudgate-backplane-write"),
            asyncio.create_task(self._renew_lease(), name="mudgate-backplane-lease"),
            asyncio.create_task(self._retire_previous(), name="mudgate-backplane-retire"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            await cancel_and_wait(tasks, "mudgate: the backplane's connection ends")
        error = next(iter(done)).exception()
        assert error is not None  # the loops only end by failing
        return error

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            if message["type"] == "message":
                self._received(message["channel"], message["data"])
            elif message["type"] == "pong":
                self.subscriptions.pong()

    def _received(self, channel: bytes, payload: bytes) -> None:
        node = self._node
        if node is None:
            return
        kind, origin_and_rest = payload[:1], payload[1:]
        origin, _, rest = origin_and_rest.partition(SEP)
        own = origin == self.node_id.encode()
        # Only channels this node subscribed to arrive, so the topic is one of its own.
        topic = Topic(self._keys.topic(channel))
        try:
            if kind == KEPT:
                self._received_kept(node, topic, own, rest)
            elif own:
                return  # our own message: delivered locally when published
            elif kind == MESSAGE:
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

    def _received_kept(self, node: Node, topic: Topic, own: bool, rest: bytes) -> None:
        """A room's or channel's event numbered by Redis: delivered on every node, this one
        included when it published it."""
        if player_of(topic) is not None:
            raise Invalid("kept", "a numbered event on a player's topic")
        sequence, message = decode_kept(rest, self.settings.outbox_max_bytes)
        message.topic = topic
        node.deliver(topic, message)
        if own:  # after it is delivered: what waited behind it follows it
            self._history.echoed(sequence)
        else:
            self.received += 1

    async def _flush(self) -> None:
        assert self._redis is not None
        assert self._pubsub is not None
        while True:
            await self._writes.wake.wait()
            self._writes.wake.clear()
            # This node's kept events reach its own players only through its subscriptions:
            # those asked for so far are in force before what was queued so far is written,
            # and what is queued meanwhile waits for the next turn (and its subscriptions).
            until = self._writes.mark()
            subscribing = self._history.enabled and self.subscriptions.subscribing()
            barrier = self.subscriptions.barrier() if subscribing else None
            await self.subscriptions.catch_up(self._pubsub)
            if barrier is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.backplane_timeout):
                        await asyncio.shield(barrier)
            await self._writes.write(self._redis, until)

    async def _renew_lease(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self.settings.presence_refresh)
            # The whole hash, not just its TTL: a presence write the full queue dropped is
            # made good here rather than lingering (a ghost in `who`) until a reconnect.
            async with asyncio.timeout(self.settings.backplane_timeout):
                await self._announce_all(self._redis)

    async def _retire_previous(self) -> None:
        """Give every key of the previous version's mailbox left without a TTL one
        (mailbox.py), now and every ``pending_message_ttl`` after: during a rolling upgrade an
        old node may still leave some."""
        assert self._redis is not None
        while True:
            try:
                retired = await self._retire_walk(self._redis)
            except ResponseError as error:  # SCAN refused (an ACL): nothing else needs it
                logger.warning(
                    "Redis refused the walk that gives the previous version's pending keys a "
                    "TTL: those left without one stay until their players come back",
                    extra={"error": str(error)},
                )
            else:
                if retired:
                    logger.info(
                        "gave %d keys of the previous version's mailbox a TTL",
                        retired,
                        extra={"keys": retired},
                    )
            await asyncio.sleep(self.settings.pending_message_ttl)

    async def _retire_walk(self, redis: Redis) -> int:
        """One walk of the database with SCAN, ``RETIRE_SCAN_COUNT`` keys a step (never KEYS,
        which would hold a large Redis up), each step under ``backplane_timeout`` rather than
        the walk (a large Redis takes many); how many keys it gave a TTL. Redis's work is
        O(keys in the database) in steps; the node's, a script per step that found old keys."""
        mailbox = self._mailbox
        cursor, retired = 0, 0
        while True:
            async with asyncio.timeout(self.settings.backplane_timeout):
                cursor, scanned = await redis.scan(
                    cursor, match=mailbox.previous_pattern, count=RETIRE_SCAN_COUNT
                )
                # Bytes: this client does not decode what Redis answers.
                if keys := mailbox.previous_keys(cast(list[bytes], scanned)):
                    retired += int(await redis.eval(*mailbox.retire_args(keys)))
            if cursor == 0:
                return retired

    def _went_away(self, error: BaseException) -> None:
        reason = str(error) or type(error).__name__
        if not isinstance(error, REDIS_ERRORS):
            logger.error("Redis backplane failed", exc_info=error)
        if self._writes.open or self._problem == "not connected yet":
            logger.warning(
                "Redis backplane unreachable: serving local players only, retrying",
                extra={"url": safe_url(self.url), "error": reason},
            )
        # What this node published to be kept and has not seen back: delivered here, in order
        # (before the queue's own drops, which are among them).
        self._history.lost()
        self._writes.close()
        self._problem = (
            f"Redis at {safe_url(self.url)} unreachable, serving local players only: {reason}"
        )
        # Nobody waits for subscriptions on a connection that is gone.
        self.subscriptions.lost()

    async def _disconnect(self) -> None:
        pubsub, redis = self._pubsub, self._redis
        self._pubsub = self._redis = None
        for closing in (pubsub, redis):
            if closing is not None:
                with contextlib.suppress(*REDIS_ERRORS):
                    await closing.aclose()
