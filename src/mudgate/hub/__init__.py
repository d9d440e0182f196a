"""The hub: who is connected, where they are, and how a message reaches them.

A facade over parts that each own their structures and are their only writer
(docs/architecture.md): the ``Registry`` (connections and players), ``Topics`` (room occupants
and topic listeners, the only caller of the backplane's subscribe and unsubscribe),
``Admission`` (attempt windows, message rates, shedding), ``Absentees`` (last seen, pending
messages) and ``ClusterPresence`` (presence, the cluster-wide cap, who).

Transports enter and leave through ``session``; game code sends with ``send``, reads with
``players_in`` and ``room_of``, and runs a timer once per cluster under ``hold_lease``; the
janitor sweeps what ``expiring`` names; monitoring reads ``stats``, ``container_stats`` and
``refusals``. Nobody outside the hub reaches its parts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Any

import msgspec

from ..backplane import Backplane, Delivery, HealthProvider, Presence, create_backplane
from ..backplane.history import RATE_LIMITED, TOO_MUCH, UNAVAILABLE, Recovery, TopicHistory
from ..backplane.topic import Topic, TopicKind, channel_topic, player_of, player_topic, room_topic
from ..bounded import ContainerStats, Expiring
from ..connection import Connection, ConnectionLimits, ConnectionState
from ..hooks import Hooks
from ..protocol import (
    CHANNEL_FIELD,
    EVENT_FIELDS,
    RESUMED_EVENT_BYTES,
    ROOM_FIELD,
    CloseCode,
    ErrorCode,
    Outgoing,
    Position,
    encode_error,
    encode_event,
    parse_resume,
    refuse_fields,
)
from ..settings import Settings
from .absentees import Absentees
from .admission import Admission, Refusal, RefusalReason
from .drain import DrainPlan
from .presence import ClusterPresence
from .registry import LOBBY, Player, Registry, checked_state
from .stats import STRUCTURE_NAMES, HubStats
from .topics import Topics

__all__ = [
    "LOBBY",
    "STRUCTURE_NAMES",
    "Delivery",
    "Hub",
    "HubStats",
    "Player",
    "Refusal",
    "RefusalReason",
]

logger = logging.getLogger("mudgate.hub")

_ROOM_PREFIX = f"{TopicKind.ROOM}:"
_ROOM_PREFIX_LENGTH = len(_ROOM_PREFIX)
_CHANNEL_PREFIX = f"{TopicKind.CHANNEL}:"
_CHANNEL_PREFIX_LENGTH = len(_CHANNEL_PREFIX)


def _refused(position: Position, why: str) -> Outgoing:
    return encode_error(
        ErrorCode.FORBIDDEN_TOPIC, f"cannot resume {position.topic!r}: {why}", topic=position.topic
    )


# Close codes a client sends when it leaves on its own (1005: a close frame without a code).
_CLIENT_CLOSES = frozenset({1000, 1001, 1005})


def _how_it_ended(conn: Connection) -> tuple[int | None, str]:
    """The close code and reason of a connection, for the log."""
    if conn.close_code is not None:  # the server closed it
        return int(conn.close_code), conn.close_reason
    ended = conn.peer_close
    if ended is None or ended[0] in _CLIENT_CLOSES:
        return (ended[0] if ended else None), "closed by client"
    if ended[0] == 1006:
        return 1006, "connection lost"
    return ended  # the protocol layer's own (a ping timeout, a ping flood, a frame too big)


class Session:
    """A connection's time on the hub (``Hub.session``). A slotted object, not a generator:
    it lives as long as the connection, so it is kept small."""

    __slots__ = ("_conn", "_hub", "_resume")

    def __init__(self, hub: Hub, conn: Connection, resume: str | None) -> None:
        self._hub = hub
        self._conn = conn
        self._resume = resume

    async def __aenter__(self) -> Player:
        resume, self._resume = self._resume, None  # not held for the connection's life
        return await self._hub._open(self._conn, resume)

    async def __aexit__(self, *exc_info: object) -> None:
        self._hub.disconnect(self._conn)


class Hub:
    """Connections, players, rooms, channels and pending messages, all bounded.

    The hub never awaits a client: it only queues on connections (``Connection.send``). A
    message is delivered to this node's listeners directly and handed to the backplane for
    the other nodes' (the in-process backplane forwards it nowhere).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backplane: Backplane | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backplane: Backplane = create_backplane(settings) if backplane is None else backplane
        self.clock = clock
        self.wall_clock = wall_clock
        self.limits = ConnectionLimits.from_settings(settings)
        self.hooks = Hooks()

        self.registry = Registry(clock)
        self.topics = Topics(self.backplane, settings.max_subscriptions_per_player)
        self.admission = Admission(settings, clock)
        self.absentees = Absentees(settings, clock, wall_clock)
        self.cluster_presence = ClusterPresence(
            self.backplane,
            self.registry,
            settings.max_connections_per_player,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.history = TopicHistory(
            size=settings.room_history_size,
            topic_bytes=settings.room_history_topic_bytes,
            ttl_seconds=settings.room_history_ttl,
            max_bytes=settings.room_history_max_bytes,
            max_topics=settings.room_history_max_topics,
            clock=clock,
        )
        # Where each topic is, from the events Redis numbered and delivered here (position()).
        self._seen: OrderedDict[Topic, tuple[int, str]] = OrderedDict()
        self.resumes = 0  # topics asked to resume
        self.recovered = 0  # ... that got back all they missed
        self.not_recovered = 0  # ... that were told recovered: false
        self.replayed = 0  # events sent again to players who resumed
        self._seq = 0

    # Lifecycle

    async def start(self, health: HealthProvider = dict) -> None:
        """Start the backplane; ``health`` (the health watch's) joins this node's summary in
        the cluster view."""
        await self.backplane.start(self, health)

    async def close_connections(
        self,
        code: CloseCode = CloseCode.GOING_AWAY,
        timeout_seconds: float = 5.0,
        *,
        reason: str | None = None,
        in_batches: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Refuse new connections, close every open one with ``code`` (and ``reason``; by
        default the code's), and wait (at most ``timeout_seconds``) until each has left
        through ``disconnect``; whoever is left then is dropped.

        ``in_batches``: closed in batches spread over most of the timeout (``DrainPlan``),
        not all at once, so that they do not all come back in the same instant. Time is the
        hub's clock; ``sleep`` waits for it (for the next batch, and for the last to leave).
        """
        # Refuse new connections.
        self.admission.close()
        started = self.clock()
        # Close the open ones, a batch at a time, each batch when it is due.
        conns = list(self.registry.connections())
        plan = DrainPlan.over(len(conns), timeout_seconds if in_batches else 0.0)
        if plan.batches > 1:
            logger.info(
                "closing %d connections in %d batches over %.1f s",
                len(conns),
                plan.batches,
                plan.spread_seconds,
                extra={"connections": len(conns), "batch_size": plan.batch_size},
            )
        for due, batch in plan.split(conns):
            wait = started + due - self.clock()
            if wait > 0:
                await sleep(wait)
            for conn in batch:
                conn.close(code, reason)  # idempotent: one that left or is closing is skipped
        # Whoever got in meanwhile (a handshake under way when the door closed) goes too.
        for conn in list(self.registry.connections()):
            conn.close(code, reason)
        # Wait until every connection has left, until the timeout at most.
        if not await self._emptied_within(started + timeout_seconds - self.clock(), sleep):
            logger.warning("%d connections did not close in time", len(self.registry))
        # Whatever did not answer in time is dropped.
        for conn in list(self.registry.connections()):
            conn.abort()
            self.disconnect(conn)

    async def _emptied_within(
        self, seconds: float, sleep: Callable[[float], Awaitable[None]]
    ) -> bool:
        """Wait until no connection is registered, at most ``seconds``: whether none is."""
        if not len(self.registry):
            return True
        emptied = asyncio.ensure_future(self.registry.emptied())
        timer = asyncio.ensure_future(sleep(max(0.0, seconds)))
        try:
            await asyncio.wait((emptied, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            emptied.cancel()
            timer.cancel()
        return not len(self.registry)

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Close every connection (1001, unless the server closed them already), the game's
        running hooks and the backplane."""
        await self.close_connections(CloseCode.GOING_AWAY, timeout_seconds)
        await self.hooks.close()
        await self.backplane.close()

    def connections(self) -> Iterator[Connection]:
        return self.registry.connections()

    def connection_count(self) -> int:
        """Connections open on this node."""
        return len(self.registry)

    def connections_of(self, player_id: str) -> list[Connection]:
        """``player_id``'s connections on this node, oldest first (a copy)."""
        return self.registry.connections_of(player_id)

    def player(self, player_id: str) -> Player | None:
        """``player_id`` if they are online on this node."""
        return self.registry.players.get(player_id)

    def charge_message(self, player_id: str) -> tuple[float, bool]:
        """Charge one message to ``player_id``'s bucket: the seconds to wait before it may be
        served (0: now), and whether the player is so far over that they are to be closed."""
        return self.admission.charge_message(player_id)

    # The way in and the one way out

    def admit(self, player_id: str, remote: str) -> Refusal | None:
        """Decide whether a new connection from ``player_id`` at ``remote`` may open."""
        return self.admission.admit(
            player_id,
            remote,
            connections=len(self.registry),
            players=len(self.registry.players),
            online=player_id in self.registry.players,
        )

    def begin_command(self, player_id: str, remote: str) -> bool:
        """A command request (``POST /commands``) from ``player_id`` at ``remote`` starts;
        False when the player or the address has as many under way as they may. Each True
        is paired with one ``end_command``."""
        return self.admission.begin_command(player_id, remote)

    def end_command(self, player_id: str, remote: str) -> None:
        self.admission.end_command(player_id, remote)

    def set_shedding(self, shedding: bool) -> None:
        """Refuse (or again accept) new connections; existing players keep playing."""
        self.admission.set_shedding(shedding, len(self.registry))

    def session(self, conn: Connection, resume: str | None = None) -> Session:
        """``async with hub.session(conn)``: a connection's life on the hub, registered and
        welcomed on entry (in a cluster, once the cluster has settled it), and every
        reference to it removed on exit, however it ends. The one way transports enter and
        leave.

        ``resume`` is where the client was when it lost its last connection (a resume string,
        docs/protocol.md): the player is put back in that room and those channels (as the
        game's ``on_return`` hooks allow) and gets what was said there meanwhile, after the
        welcome."""
        return Session(self, conn, resume)

    async def _open(self, conn: Connection, resume: str | None = None) -> Player:
        """Session's entry: register, settle with the cluster, recover, welcome. Whatever
        reaches the connection meanwhile (its room, the game's hooks, tells) is held by the
        connection, under its outbox caps, and written after the welcome and the backlog."""
        positions, told = self._resume_positions(resume)
        left_from = None
        if (
            any(position.topic.startswith(_ROOM_PREFIX) for position in positions)
            and conn.player_id not in self.registry.players
            and conn.player_id not in self.absentees.left_rooms
            and self.backplane.clustered
        ):
            # They left another node: the cluster remembers where from.
            left_from = await self.backplane.last_room(conn.player_id)
        player, greeting = self._enter(conn, positions, left_from)
        try:
            elsewhere, excess = await self.cluster_presence.settle(conn)
            told += await self._recover(conn, player, positions)
        except BaseException:
            self.disconnect(conn)
            raise
        self.evict(conn.player_id, excess)
        self._welcome(conn, greeting, [*elsewhere, *told])
        return player

    def connect(self, conn: Connection) -> Player:
        """Register ``conn`` outside a session (tests, tools) and welcome it at once, without
        settling with the cluster. Leave with ``disconnect``."""
        player, greeting = self._enter(conn, [])
        self._welcome(conn, greeting, [])
        return player

    def _enter(
        self, conn: Connection, positions: list[Position], left_from: str | None = None
    ) -> tuple[Player, Outgoing]:
        """Register ``conn``; its player comes online (in the lobby, or back in the room of
        ``positions`` if that is the room they left from, here or, ``left_from``, on another
        node; and their channels) if they were not. The connection holds what it is sent until
        ``_welcome``; its welcome is made here, before any hook can send to it, so the
        welcome's seq comes before theirs."""
        player, arrived = self.registry.add(conn)
        if arrived:
            left_from = self.absentees.returned(player.id) or left_from
            room = self._room_to_return_to(player.id, positions, left_from)
            self.topics.arrive(player, room)
        for position in positions:  # online already or not, their channels are theirs again
            if position.topic.startswith(_CHANNEL_PREFIX) and self.hooks.may_return(
                player.id, position.topic
            ):
                self.topics.join(player, position.topic[_CHANNEL_PREFIX_LENGTH:])
        greeting = self.event(
            "welcome",
            player=player.id,
            room=player.room,
            connection=conn.id,
            reconnect_window=self.settings.reconnect_window,
            position=self.position(room_topic(player.room)),
        )
        own = self.registry.player_connections[player.id]
        if len(own) > self.settings.max_connections_per_player:
            oldest = own[0]
            oldest.close(CloseCode.REPLACED)
            self.disconnect(oldest)
        self.cluster_presence.announce(player.id)
        if arrived:  # now that the player can be reached
            self.hooks.connected(player.id)
        logger.info(
            "connection opened",
            extra={
                "connection": conn.id,
                "player": conn.player_id,
                "remote": conn.remote,
                "transport": conn.transport.name,
            },
        )
        return player, greeting

    # Resume

    def _resume_positions(self, resume: str | None) -> tuple[list[Position], list[Outgoing]]:
        """The positions of a resume string, and the errors to tell the player about it: one
        that is not a resume string, or names a topic nobody may resume (a player's own), is
        told and otherwise ignored."""
        if not resume:
            return [], []
        try:
            positions = parse_resume(resume, self.settings.max_subscriptions_per_player + 1)
        except ValueError as error:
            return [], [encode_error(ErrorCode.INVALID_RESUME, f"resume ignored: {error}")]
        kept: list[Position] = []
        told: list[Outgoing] = []
        rooms = 0
        named: set[str] = set()
        for position in positions:
            # Read once, whatever a client repeats: a second reading would replay it again.
            if position.topic in named:
                told.append(_refused(position, "named twice"))
                continue
            named.add(position.topic)
            kind = position.topic.partition(":")[0]
            if kind == TopicKind.ROOM:
                rooms += 1
                if rooms > 1:
                    told.append(_refused(position, "only one room can be resumed"))
                    continue
            elif kind != TopicKind.CHANNEL:
                told.append(_refused(position, "only rooms and channels can be resumed"))
                continue
            kept.append(position)
        return kept, told

    def _room_to_return_to(
        self, player_id: str, positions: list[Position], left_from: str | None
    ) -> str:
        """The room a resume names, if the player left from it (a client cannot walk into a
        room by naming it) and the game's ``on_return`` hooks let them back; else the lobby."""
        for position in positions:
            if (
                position.topic.startswith(_ROOM_PREFIX)
                and position.topic[_ROOM_PREFIX_LENGTH:] == left_from
                and self.hooks.may_return(player_id, position.topic)
            ):
                return left_from
        return LOBBY

    async def _recover(
        self, conn: Connection, player: Player, positions: list[Position]
    ) -> list[Outgoing]:
        """Read what each topic of ``positions`` said after the client's offset. The connection
        holds it (counted in its outbox, ahead of what it holds already; past its caps a topic
        is told ``too_much``), each topic's followed by a ``resumed`` event saying whether that
        was all, and forgets what it holds of the same (it arrived live while this was read).
        The refusals to tell the player, for the backlog."""
        told: list[Outgoing] = []
        reading: list[Position] = []
        limited: list[Position] = []
        for position in positions:
            refusal, rate_limited = self._refusal(player, position)
            if refusal is None:
                reading.append(position)
            else:
                told.append(refusal)
                if rate_limited:  # joined, but not read: the client is told what it lost
                    limited.append(position)
        replay: list[Outgoing] = []
        # What is left once each topic read has room for its resumed event, which is held
        # whatever was replayed: a replay that would fill it is too_much.
        messages_left, bytes_left = conn.room_left()
        messages_left -= len(reading)
        bytes_left -= len(reading) * RESUMED_EVENT_BYTES
        for position in reading:
            topic = Topic(position.topic)
            recovery = await self._recovery(topic, position)
            missed = recovery.messages
            size = sum(len(message) for message in missed)
            if missed and (len(missed) >= messages_left or size >= bytes_left):
                recovery = Recovery(False, recovery.epoch, recovery.offset, reason=TOO_MUCH)
                missed = ()
            if missed:
                conn.forget_held(topic, recovery.offset)
                replay.extend(missed)
                messages_left -= len(missed)
                bytes_left -= size
                self.replayed += len(missed)
            replay.append(self._resumed(conn, topic, recovery, len(missed)))
        for position in limited:
            topic = Topic(position.topic)
            latest, epoch = self._where(topic) or (0, "")
            recovery = Recovery(False, epoch, latest, reason=RATE_LIMITED)
            replay.append(self._resumed(conn, topic, recovery, 0))
        conn.hold_first(replay)
        return told

    def _resumed(self, conn: Connection, topic: Topic, recovery: Recovery, missed: int) -> Outgoing:
        """The ``resumed`` event of ``topic``: where the client now is there. Not recovered,
        that is before the first event the connection holds of it (so none it is given is
        below what it is told) and, with Redis, no further than this node has delivered (what
        Redis numbered before still comes); a numbered event of it at or below that, arriving
        late, is not sent (``Connection.resumed``)."""
        offset, epoch = recovery.offset, recovery.epoch
        if not recovery.recovered:
            first = conn.first_held(topic, epoch)
            if first:
                offset = min(offset, first - 1)
            seen = self._where(topic)
            if seen is not None and seen[1] == epoch:
                offset = min(offset, seen[0])
        conn.resumed(topic, epoch, offset)
        self.resumes += 1
        if recovery.recovered:
            self.recovered += 1
        else:
            self.not_recovered += 1
        kind, _, name = topic.partition(":")
        resumed = self.event(
            "resumed",
            **{kind: name},
            recovered=recovery.recovered,
            offset=offset,
            epoch=epoch,
            missed=missed,
            reason=recovery.reason,
        )
        # Where the client now is in ``topic`` (an SSE stream's id says so).
        resumed.topic, resumed.offset, resumed.epoch = topic, offset, epoch
        return resumed

    def _refusal(self, player: Player, position: Position) -> tuple[Outgoing | None, bool]:
        """Why ``position``'s topic is not read for ``player`` (None: it is, and costs them a
        message), and whether that is the player's rate."""
        kind, _, name = position.topic.partition(":")
        listening = name == player.room if kind == TopicKind.ROOM else name in player.channels
        if not listening:
            if not self.hooks.may_return(player.id, position.topic):
                return _refused(position, "the game does not let you back in"), False
            if kind == TopicKind.ROOM:
                why = "you are not in that room, nor did you leave from it"
                return _refused(position, why), False
            return _refused(position, "too many channels"), False
        # Each topic read costs the player a message: reconnecting in a loop to have the
        # history read again and again is limited like sending in a loop.
        wait, _ = self.admission.charge_message(player.id)
        if wait > 0:
            error = encode_error(
                ErrorCode.RATE_LIMITED,
                f"resume of {position.topic!r} refused: too many, too fast",
                retry_after=round(wait, 3),
                topic=position.topic,
            )
            return error, True
        return None, False

    async def _recovery(self, topic: Topic, position: Position) -> Recovery:
        if not self.history.enabled:
            return Recovery(False, "", 0, reason=UNAVAILABLE)
        if self.backplane.keeps_history:
            recovery = await self.backplane.recover(topic, position.offset, position.epoch)
            if recovery is not None:
                return recovery
            return Recovery(False, "", 0, reason=UNAVAILABLE)
        return self.history.recover(topic, position.offset, position.epoch)

    def _welcome(self, conn: Connection, greeting: Outgoing, elsewhere: list[Outgoing]) -> None:
        """Write ``greeting`` to ``conn``, then what was queued while the player was away
        (here, then on other nodes), then what the connection was sent since it entered, in
        order."""
        if conn.state is not ConnectionState.OPENING:
            return  # closed while settling
        conn.welcome([greeting, *self.absentees.take(conn.player_id), *elsewhere])

    def disconnect(self, conn: Connection) -> None:
        """Remove every reference to ``conn`` from every structure. Idempotent."""
        removed, gone = self.registry.remove(conn)
        if not removed:
            return
        if gone is not None:
            self._go_offline(gone)
        elif self.registry.player_connections.get(conn.player_id):
            self.cluster_presence.announce(conn.player_id)
        conn.release()
        code, reason = _how_it_ended(conn)
        logger.info(
            "connection closed",
            extra={
                "connection": conn.id,
                "player": conn.player_id,
                "code": code,
                "reason": reason,
                "seconds": round(self.clock() - conn.connected_at, 3),
            },
        )

    def _go_offline(self, player: Player) -> None:
        self.topics.depart(player)
        self.cluster_presence.withdraw(player.id, player.room)
        # Remembered for a while, so a player who comes back soon gets what was sent meanwhile
        # (and may be put back in the room they left from).
        self.absentees.left(player.id, player.room)
        self.hooks.disconnected(player.id)

    def repair(self, dry_run: bool) -> int:
        """Put the structures back in step should a bug ever part them (the janitor's
        reconciliation): the connection index first (a connection missing from it would make
        its player look orphaned), then players without a connection, then rooms and topics
        with members who are not online. The number of entries fixed (or, dry, to fix)."""
        fixed = self.registry.repair_index(dry_run)
        orphans = self.registry.orphans()
        if not dry_run:
            for player_id in orphans:
                player = self.registry.drop(player_id)
                if player is not None:
                    self._go_offline(player)
        return fixed + len(orphans) + self.topics.repair(self.registry.players, dry_run)

    # Rooms and channels

    def move(self, player: Player, room: str) -> None:
        """Move ``player`` into ``room``; the rooms on both sides hear about it.

        Only a move is announced, never a connect or disconnect: presence changes would
        otherwise cost a message to everyone in a crowded lobby for every player who comes
        and goes. A game that wants "X enters the game" sends it itself.
        """
        if room == player.room:
            return
        old_room = player.room
        self.topics.leave(player)
        self.room_event(old_room, "depart", player=player.id)
        self.topics.enter(player, room)
        self.cluster_presence.announce(player.id)
        self.room_event(room, "arrive", player=player.id)
        self.hooks.moved(player.id, old_room, room)

    def subscribe(self, player: Player, channel: str) -> bool:
        """Add ``channel`` to what ``player`` hears; False past max_subscriptions_per_player."""
        return self.topics.join(player, channel)

    def unsubscribe(self, player: Player, channel: str) -> bool:
        """Stop ``player`` hearing ``channel``; False if they were not subscribed."""
        return self.topics.part(player, channel)

    # Messages

    def event(self, name: str, /, **fields: Any) -> Outgoing:
        """Encode an event once, stamped with the time and the hub's sequence number.

        The hub sets ``type``, ``event``, ``ts`` and ``seq`` (``protocol.EVENT_FIELDS``); a
        field of the game's by one of those names raises ValueError, rather than being lost
        or corrupting the envelope every client reads.
        """
        refuse_fields(name, fields, EVENT_FIELDS)
        self._seq += 1
        fields["ts"] = round(self.wall_clock(), 3)
        fields["seq"] = self._seq
        return encode_event(name, fields)

    def _numbered(self, name: str, fields: dict[str, Any], offset: int, epoch: str) -> Outgoing:
        """``event``, with its topic's ``offset`` and ``epoch`` last (where Redis puts them)."""
        refuse_fields(name, fields, EVENT_FIELDS)
        self._seq += 1
        fields["ts"] = round(self.wall_clock(), 3)
        fields["seq"] = self._seq
        fields["offset"] = offset
        fields["epoch"] = epoch
        return encode_event(name, fields)

    def room_event(self, room: str, event: str, /, **fields: Any) -> None:
        """Send ``event`` to everyone in ``room``, on every node, and keep it in the room's
        history; the hub adds ``room`` (and ``ts``, ``seq``, ``offset``, ``epoch``): a field
        of one of those names raises ValueError."""
        refuse_fields(event, fields, ROOM_FIELD)
        fields["room"] = room
        self._publish_kept(room_topic(room), event, fields)

    def channel_event(self, channel: str, event: str, /, **fields: Any) -> None:
        """Send ``event`` to everyone subscribed to ``channel``, on every node, and keep it in
        the channel's history; the hub adds ``channel`` (and ``ts``, ``seq``, ``offset``,
        ``epoch``): a field of one of those names raises ValueError."""
        refuse_fields(event, fields, CHANNEL_FIELD)
        fields["channel"] = channel
        self._publish_kept(channel_topic(channel), event, fields)

    def position(self, topic: Topic) -> dict[str, Any] | None:
        """Where ``topic`` (a room's or a channel's) is now, ``{"offset": n, "epoch": e}``, as
        far as this node knows (None: not known, or no history): what a client that has not
        heard from the topic yet resumes from. With Redis, the latest event this node
        delivered there."""
        where = self._where(topic)
        return None if where is None else {"offset": where[0], "epoch": where[1]}

    def _where(self, topic: Topic) -> tuple[int, str] | None:
        """``position`` as (offset, epoch)."""
        if not self.history.enabled:
            return None
        if self.backplane.keeps_history:
            return self._seen.get(topic)
        return self.history.position(topic)

    def _publish_kept(self, topic: Topic, event: str, fields: dict[str, Any]) -> None:
        """Publish a room's or channel's event numbered in its topic: by the cluster (Redis
        numbers it and delivers it back here), or else here, kept in this process."""
        if not self.history.enabled:
            self._publish(topic, self.event(event, **fields))
            return
        if self.backplane.keeps_history:
            self.backplane.publish_kept(topic, self.event(event, **fields))
            return
        offset, epoch = self.history.next(topic)
        message = self._numbered(event, fields, offset, epoch)
        message.topic, message.offset, message.epoch = topic, offset, epoch
        self.history.keep(topic, offset, epoch, message)
        self._publish(topic, message)

    def send(
        self, player_id: str, event: str | Outgoing, /, *, sender: str | None = None, **fields: Any
    ) -> Delivery:
        """Send ``event`` (a name and its fields, or a message from ``event()``) to one player
        wherever they are, or keep it for them if they left recently. Never waits.

        A player held by another node is reached through the backplane, which delivers or
        queues the message there (``Delivery.ROUTED``). What is kept for a player who is away
        is capped per player, per ``sender`` (a player; None for the game itself) and, all
        together, in bytes; past a cap the message is refused and nothing kept is pushed out.
        """
        message = self.event(event, **fields) if isinstance(event, str) else event
        if player_id in self.registry.players:
            self._publish(player_topic(player_id), message)
            return Delivery.SENT
        if self.backplane.clustered:
            self.backplane.route(player_id, message, sender)
            return Delivery.ROUTED
        return self.absentees.queue(player_id, message, sender)

    async def tell(
        self, player_id: str, event: str | Outgoing, /, *, sender: str | None = None, **fields: Any
    ) -> Delivery:
        """``send``, waiting in a cluster for what became of the message (never ``ROUTED``)."""
        message = self.event(event, **fields) if isinstance(event, str) else event
        if player_id in self.registry.players or not self.backplane.clustered:
            return self.send(player_id, message, sender=sender)
        delivery = await self.backplane.send_direct(player_id, message, sender)
        return self.absentees.queue(player_id, message, sender) if delivery is None else delivery

    def _publish(self, topic: Topic, message: Outgoing) -> None:
        """Deliver ``message`` to ``topic``'s listeners here, and to every other node's."""
        if self.backplane.keeps_history:
            # This node's kept events reach its players only back from the cluster: what it
            # sends after them follows them (the other nodes get both in order anyway).
            self.backplane.after_kept(partial(self.deliver, topic, message))
        else:
            self.deliver(topic, message)
        self.backplane.publish(topic, message)

    def reply(self, conn: Connection, message: Outgoing) -> None:
        """Queue ``message`` (a command's answer) on ``conn`` alone, after what this node
        published before it (``_publish``)."""
        if self.backplane.keeps_history:
            self.backplane.after_kept(partial(conn.send, message))
        else:
            conn.send(message)

    async def players_in(self, room: str) -> list[str]:
        """The players in ``room``, on this node and (when reachable) every other, sorted:
        what a game's ``look`` lists."""
        return await self.occupants(room)

    def local_players_in(self, room: str) -> list[str]:
        """The players in ``room`` on this node only, sorted, without waiting: for what is
        about this node's connections (the other nodes' players are not here)."""
        return sorted(self.topics.in_room(room))

    def room_of(self, player_id: str) -> str | None:
        """The room ``player_id`` is in, or None if they are not online on this node."""
        player = self.registry.players.get(player_id)
        return None if player is None else player.room

    def move_player(self, player_id: str, room: str) -> bool:
        """Move an online player (a game's teleport); False if they are not online here."""
        player = self.registry.players.get(player_id)
        if player is None:
            return False
        self.move(player, room)
        return True

    def save_state(self, player_id: str, state: Mapping[str, Any]) -> None:
        """Keep ``state`` (a small JSON object) for an online player, in place of what was
        kept: a game's per-player memory that survives the game's restarts (not the player
        going offline). ValueError if the player is not online here, or if it is not JSON or
        over ``max_player_state_bytes``."""
        player = self.registry.players.get(player_id)
        if player is None:
            raise ValueError(f"player {player_id!r} is not online on this node")
        player.state = checked_state(state, self.settings.max_player_state_bytes)

    def state_of(self, player_id: str) -> dict[str, Any]:
        """A copy of what ``save_state`` kept for ``player_id`` (empty if nothing, or if they
        are not online here)."""
        player = self.registry.players.get(player_id)
        return {} if player is None else dict(msgspec.json.decode(player.state))

    async def who(self) -> list[str]:
        """Every player online, on this node and (when reachable) every other, sorted."""
        return await self.cluster_presence.who()

    async def occupants(self, room: str) -> list[str]:
        """The players in ``room``, on this node and (when reachable) every other, sorted."""
        return await self.cluster_presence.occupants(room, self.topics.in_room(room))

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        """Whether this node holds the lease ``name`` for the next ``ttl_seconds``, taken or
        renewed now: a game's timer that acts only while its node holds the lease acts once
        per cluster, however many nodes or workers run it. Ask at every tick, with a TTL
        longer than the time between ticks (twice it, say). Always True on one process; False
        while Redis cannot be reached (``Backplane.hold_lease``)."""
        return await self.backplane.hold_lease(name, ttl_seconds)

    # The backplane's Node protocol

    def deliver(self, topic: Topic, message: Outgoing) -> None:
        """Queue ``message`` for every listener of ``topic`` on this node (what this node
        publishes, and what the backplane brings from the others). Never awaits: a slow recipient
        is closed by its own outbox, not waited for."""
        player_id = player_of(topic)
        listeners = (player_id,) if player_id is not None else self.topics.listeners(topic)
        if message.offset and self.backplane.keeps_history:
            self._saw(topic, message)
        self.registry.send(listeners, message)

    def _saw(self, topic: Topic, message: Outgoing) -> None:
        """Note where ``topic`` is, from an event Redis numbered (``position``); at most
        ``room_history_max_topics`` are noted, the least recently heard forgotten first."""
        seen = self._seen
        seen[topic] = (message.offset, message.epoch)
        seen.move_to_end(topic)
        if len(seen) > self.settings.room_history_max_topics:
            seen.popitem(last=False)

    def evict(self, player_id: str, count: int) -> None:
        """Close this node's ``count`` oldest connections of ``player_id`` (4009)."""
        for conn in self.registry.connections_of(player_id)[:count]:
            conn.close(CloseCode.REPLACED)
            self.disconnect(conn)

    def presence(self) -> dict[str, Presence]:
        return self.cluster_presence.presence()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.settings.node_name,
            "connections": len(self.registry),
            "players": len(self.registry.players),
        }

    # Monitoring

    @property
    def shedding(self) -> bool:
        return self.admission.shedding

    @property
    def backplane_problem(self) -> str | None:
        """Why the backplane cannot reach the cluster now, if it cannot."""
        return self.backplane.problem

    def recent_slow_consumers(self, window_seconds: float) -> int:
        """Connections closed with 4008 in the last ``window_seconds``."""
        return self.registry.recent_slow_consumers(window_seconds)

    def refusals(self) -> dict[RefusalReason, int]:
        """Connections refused since start, by reason (a copy)."""
        return dict(self.admission.refused)

    def expiring(self) -> dict[str, Expiring]:
        """The structures whose entries expire, by their operators' names: what the janitor
        sweeps (each expires its own entries)."""
        return {
            "connection_attempts": self.admission.connection_attempts,
            "message_rate_limits": self.admission.message_rates,
            "last_seen": self.absentees.last_seen,
            "left_rooms": self.absentees.left_rooms,
            "pending_messages": self.absentees.pending_messages,
            "room_history": self.history,
        }

    def container_stats(self) -> dict[str, ContainerStats]:
        """The counters of every container that evicts or expires, by structure."""
        return {name: container.stats() for name, container in self.expiring().items()}

    def stats(self) -> HubStats:
        """The size of every structure, and the hub's counters."""
        outbox_bytes = outbox_messages = 0
        for conn in self.registry.connections():
            outbox_bytes += conn.outbox_bytes
            outbox_messages += conn.outbox_messages
        registry, rooms, pending = self.registry, self.topics, self.absentees.pending_messages
        history = self.history
        return HubStats(
            active_websockets=len(registry.websockets),
            active_sse=len(registry.sse),
            active_telnet=len(registry.telnet),
            player_websockets=len(registry.player_connections),
            connection_timestamps=len(registry.opened_at),
            online_players=len(registry.players),
            room_occupants=len(rooms.occupants),
            room_subscriptions=len(rooms.topic_listeners),
            last_seen=len(self.absentees.last_seen),
            connection_attempts=len(self.admission.connection_attempts),
            message_rate_limits=len(self.admission.message_rates),
            pending_messages=len(pending),
            total_connections=len(registry),
            pending_message_entries=pending.items_held,
            pending_message_bytes=pending.size_bytes,
            pending_messages_refused=pending.refusals,
            outbox_messages=outbox_messages,
            outbox_bytes=outbox_bytes,
            connections_opened=registry.opened,
            slow_consumer_disconnects=registry.slow_consumer_disconnects,
            refused_connections=sum(self.admission.refused.values()),
            commands_in_flight=self.admission.commands_by_player.under_way,
            commands_refused=self.admission.commands_by_player.refused
            + self.admission.commands_by_address.refused,
            room_history=len(history),
            room_history_entries=history.entries,
            room_history_bytes=history.bytes,
            room_history_evicted=history.trimmed + history.evicted,
            resumes=self.resumes,
            resumes_recovered=self.recovered,
            resumes_not_recovered=self.not_recovered,
            events_replayed=self.replayed,
            backplane=self.backplane.stats(),
        )
