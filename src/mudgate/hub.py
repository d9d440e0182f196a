"""The hub: who is connected, where they are, and how a message reaches them.

Every structure here is bounded (DESIGN.md section 2): connections and players by their caps,
rooms and subscription sets by being removed when empty, and what outlives a connection
(``last_seen``, ``pending_messages``, ``connection_attempts``) by a capacity and a TTL.
``disconnect`` is the one way out: it removes every reference to a connection.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .backplane import Backplane, Delivery, Presence, create_backplane
from .bounded import Mailboxes, Refused, SlidingWindowLimiter, TokenBuckets, TTLMap
from .connection import Connection, ConnectionLimits, ConnectionState
from .hooks import Hooks
from .protocol import CloseCode, Outgoing, encode_event
from .settings import Settings

__all__ = ["LOBBY", "Delivery", "Hub", "Player", "Refusal"]

logger = logging.getLogger("mudgate.hub")

LOBBY = "lobby"
# Why a connection may be refused (Refusal.reason), each counted for /metrics.
RATE_LIMITED = "too many connection attempts"
MEMORY_PRESSURE = "memory pressure"
SERVER_FULL = "server full"
TOO_MANY_PLAYERS = "too many players online"
SHUTTING_DOWN = "shutting down"
REFUSAL_REASONS = (RATE_LIMITED, MEMORY_PRESSURE, SERVER_FULL, TOO_MANY_PLAYERS, SHUTTING_DOWN)


class Player:
    """A player online on this hub: where they are and what they listen to."""

    __slots__ = ("channels", "connected_at", "id", "room")

    def __init__(self, player_id: str, room: str, connected_at: float) -> None:
        self.id = player_id
        self.room = room
        self.channels: set[str] = set()
        self.connected_at = connected_at


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new connection was refused, and when the client may try again."""

    code: CloseCode
    reason: str
    retry_after_seconds: int


# Close codes a client sends when it leaves on its own (1005: a close frame without a code).
_CLIENT_CLOSES = frozenset({1000, 1001, 1005})


def _how_it_ended(conn: Connection, ended: tuple[int, str] | None) -> tuple[int | None, str]:
    """The close code and reason of a connection, for the log."""
    if conn.close_code is not None:  # the server closed it
        return int(conn.close_code), conn.close_reason
    if ended is None or ended[0] in _CLIENT_CLOSES:
        return (ended[0] if ended else None), "closed by client"
    if ended[0] == 1006:
        return 1006, "connection lost"
    return ended  # the protocol layer's own (a ping timeout, a ping flood, a frame too big)


def room_topic(room: str) -> str:
    return f"room:{room}"


def channel_topic(channel: str) -> str:
    return f"channel:{channel}"


def player_topic(player_id: str) -> str:
    return f"player:{player_id}"


class Hub:
    """Connections, players, rooms, channels and pending messages, all bounded.

    The hub never awaits a client: it only queues on connections (``Connection.send``). All
    fan-out goes through the backplane so several hubs can share rooms.
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
        self.backplane: Backplane = backplane or create_backplane(settings)
        self.clock = clock
        self.wall_clock = wall_clock
        self.limits = ConnectionLimits.from_settings(settings)

        # The structures of DESIGN.md section 3, under the operators' names.
        self.active_websockets: dict[str, Connection] = {}
        self.active_sse: dict[str, Connection] = {}
        self.player_websockets: dict[str, list[Connection]] = {}
        self.connection_timestamps: dict[str, float] = {}
        self.online_players: dict[str, Player] = {}
        self.room_occupants: dict[str, set[str]] = {}
        self.room_subscriptions: dict[str, set[str]] = {}
        self.last_seen: TTLMap[str, float] = TTLMap(
            settings.max_players, settings.last_seen_ttl, clock=clock
        )
        self.connection_attempts = SlidingWindowLimiter(
            settings.max_rate_limit_entries,
            settings.connection_attempt_ttl,
            settings.max_rate_limit_keys,
            clock=clock,
        )
        # What each player may send: a token bucket per player, across their connections.
        self.message_rates = TokenBuckets(
            settings.player_messages_per_second,
            settings.player_message_burst,
            settings.max_players,
            clock=clock,
        )
        self.pending_messages: Mailboxes[str, Outgoing] = Mailboxes(
            settings.max_players,
            settings.max_pending_messages,
            settings.max_pending_bytes,
            settings.pending_message_ttl,
            max_per_sender=settings.max_pending_per_sender,
            clock=clock,
            sizeof=len,
        )

        # Counters for monitoring.
        self.connections_opened = 0
        self.slow_consumer_disconnects = 0
        self.refused_by_reason: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        # When recent slow consumers were dropped, for the SLOW_CONSUMERS alert.
        self.slow_consumer_times: deque[float] = deque(maxlen=1000)
        # Set under memory pressure: new connections are refused, existing ones keep playing.
        self.shedding = False
        self._seq = 0
        self.hooks = Hooks()
        # What the cluster view shows of this node besides its counts: memory and alerts,
        # which the janitor knows (create_app hands it its Janitor.health).
        self.health: Callable[[], dict[str, object]] = dict
        self._all_disconnected = asyncio.Event()
        self._all_disconnected.set()
        self._closing = False  # shutting down: no new connections

    # Lifecycle

    async def start(self) -> None:
        await self.backplane.start(self)

    async def close_connections(
        self, code: CloseCode = CloseCode.GOING_AWAY, timeout_seconds: float = 5.0
    ) -> None:
        """Refuse new connections, close every open one with ``code``, and wait (at most
        ``timeout_seconds``) until each has left through ``disconnect``."""
        self._closing = True
        # Tell every client why.
        for conn in list(self.connections()):
            conn.close(code)
        # Wait, bounded, for their handlers to run the one way out.
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._all_disconnected.wait()
        except TimeoutError:
            logger.warning("%d connections did not close in time", len(self.connection_timestamps))
        # Whatever did not answer in time is dropped.
        for conn in list(self.connections()):
            conn.abort()
            self.disconnect(conn)

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Close every connection (1001, unless the server closed them already), the game's
        running hooks and the backplane."""
        await self.close_connections(CloseCode.GOING_AWAY, timeout_seconds)
        await self.hooks.close()
        await self.backplane.close()

    def connections(self) -> Iterator[Connection]:
        yield from self.active_websockets.values()
        yield from self.active_sse.values()

    # Admission

    def admit(self, player_id: str, remote: str) -> Refusal | None:
        """Decide whether a new connection from ``player_id`` at ``remote`` may open."""
        # Both keys are charged, so neither many players behind one address nor one player
        # from many addresses can hammer the server.
        for key in (f"ip:{remote}", f"player:{player_id}"):
            if not self.connection_attempts.hit(key):
                retry_after = self.connection_attempts.retry_after(key)
                return self._refuse(CloseCode.RATE_LIMITED, RATE_LIMITED, math.ceil(retry_after))
        if self._closing:
            return self._refuse(CloseCode.SERVICE_RESTART, SHUTTING_DOWN, 5)
        if self.shedding:
            return self._refuse(CloseCode.TRY_AGAIN_LATER, MEMORY_PRESSURE, 30)
        if len(self.connection_timestamps) >= self.settings.max_connections:
            return self._refuse(CloseCode.TRY_AGAIN_LATER, SERVER_FULL, 30)
        if (
            player_id not in self.online_players
            and len(self.online_players) >= self.settings.max_players
        ):
            return self._refuse(CloseCode.TRY_AGAIN_LATER, TOO_MANY_PLAYERS, 30)
        return None

    def charge_message(self, player_id: str) -> tuple[float, bool]:
        """Count a frame ``player_id`` sent: the seconds they must wait before the next (0:
        serve this one), and whether they are over the limit (they kept sending while told
        to wait: the connection goes)."""
        wait = self.message_rates.take(player_id)
        if wait == math.inf:
            return self.message_rates.refill_seconds, True
        return wait, False

    def set_shedding(self, shedding: bool) -> None:
        """Refuse (or again accept) new connections; existing players keep playing."""
        if shedding != self.shedding:
            self.shedding = shedding
            logger.warning(
                "shedding started: refusing new connections"
                if shedding
                else "shedding stopped: accepting new connections",
                extra={"shedding": shedding, "connections": len(self.connection_timestamps)},
            )

    def recent_slow_consumers(self, window_seconds: float) -> int:
        cutoff = self.clock() - window_seconds
        return sum(1 for at in self.slow_consumer_times if at > cutoff)

    def _refuse(self, code: CloseCode, reason: str, retry_after_seconds: int) -> Refusal:
        self.refused_by_reason[reason] += 1
        return Refusal(code, reason, retry_after_seconds)

    # The way in and the one way out

    def connect(self, conn: Connection) -> Player:
        """Register ``conn``; its player comes online (in the lobby) if they were not."""
        self._registry(conn)[conn.id] = conn
        self.connection_timestamps[conn.id] = conn.connected_at
        self.connections_opened += 1
        self._all_disconnected.clear()

        player = self.online_players.get(conn.player_id)
        arrived = player is None
        if player is None:
            player = self._come_online(conn.player_id, conn.connected_at)
        own = self.player_websockets.setdefault(conn.player_id, [])
        own.append(conn)
        if len(own) > self.settings.max_connections_per_player:
            oldest = own[0]
            oldest.close(CloseCode.REPLACED)
            self.disconnect(oldest)

        self._announce(player.id)
        if not self.backplane.clustered:
            # In a cluster, settle() welcomes once the player can be reached from every node.
            self._welcome(conn)
        if arrived:  # now that the player can be reached
            self.hooks.connected(conn.player_id)
        logger.info(
            "connection opened",
            extra={
                "connection": conn.id,
                "player": conn.player_id,
                "remote": conn.remote,
                "transport": conn.transport,
            },
        )
        return player

    def _welcome(self, conn: Connection, elsewhere: list[Outgoing] | None = None) -> None:
        """Tell ``conn`` it is in, then hand it what was queued while the player was away
        (here, then on other nodes), in order."""
        player = self.online_players.get(conn.player_id)
        if player is None or conn.state is not ConnectionState.OPEN:
            return  # closed while settling
        conn.welcomed = True
        conn.send(self.event("welcome", player=player.id, room=player.room, connection=conn.id))
        conn.send_backlog([*self.pending_messages.take(conn.player_id), *(elsewhere or ())])

    def disconnect(self, conn: Connection, ended: tuple[int, str] | None = None) -> None:
        """Remove every reference to ``conn`` from every structure. Idempotent.

        ``ended`` is how the transport says the connection ended (a WebSocket's close code and
        reason), for the log when the server did not close it itself.
        """
        if self._registry(conn).pop(conn.id, None) is None:
            return
        self.connection_timestamps.pop(conn.id, None)
        own = self.player_websockets.get(conn.player_id)
        if own is not None:
            own.remove(conn)
            if not own:
                del self.player_websockets[conn.player_id]
                self._go_offline(conn.player_id)
            else:
                self._announce(conn.player_id)
        if conn.close_code is CloseCode.SLOW_CONSUMER:
            self.slow_consumer_disconnects += 1
            self.slow_consumer_times.append(self.clock())
        if not self.connection_timestamps:
            self._all_disconnected.set()
        conn.closed()
        code, reason = _how_it_ended(conn, ended)
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

    def _registry(self, conn: Connection) -> dict[str, Connection]:
        return self.active_sse if conn.transport == "sse" else self.active_websockets

    def _come_online(self, player_id: str, now: float) -> Player:
        player = self.online_players[player_id] = Player(player_id, LOBBY, now)
        self.last_seen.pop(player_id)
        self.backplane.subscribe(player_topic(player_id))
        self._enter_room(player, LOBBY)
        return player

    def drop_player(self, player_id: str) -> None:
        """Take a player offline whose connections are all gone (the janitor's repair)."""
        if not self.player_websockets.get(player_id):
            self.player_websockets.pop(player_id, None)
            self._go_offline(player_id)

    def _go_offline(self, player_id: str) -> None:
        player = self.online_players.pop(player_id, None)
        if player is None:
            return
        self._leave_room(player)
        for channel in player.channels:
            self._unsubscribe(channel_topic(channel), player_id)
        player.channels.clear()
        self.backplane.unsubscribe(player_topic(player_id))
        self.backplane.announce(player_id, None)
        # Remembered for a while, so a player who comes back soon gets what was sent meanwhile.
        self.last_seen.set(player_id, self.wall_clock())
        self.hooks.disconnected(player_id)

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
        self._leave_room(player)
        self.broadcast_room(old_room, self.event("depart", room=old_room, player=player.id))
        self._enter_room(player, room)
        self._announce(player.id)
        self.broadcast_room(room, self.event("arrive", room=room, player=player.id))
        self.hooks.moved(player.id, old_room, room)

    def _enter_room(self, player: Player, room: str) -> None:
        player.room = room
        self.room_occupants.setdefault(room, set()).add(player.id)
        self._subscribe(room_topic(room), player.id)

    def _leave_room(self, player: Player) -> None:
        occupants = self.room_occupants.get(player.room)
        if occupants is not None:
            occupants.discard(player.id)
            if not occupants:
                del self.room_occupants[player.room]
        self._unsubscribe(room_topic(player.room), player.id)

    def subscribe(self, player: Player, channel: str) -> bool:
        """Add ``channel`` to what ``player`` hears; False past max_subscriptions_per_player."""
        if channel in player.channels:
            return True
        if len(player.channels) >= self.settings.max_subscriptions_per_player:
            return False
        player.channels.add(channel)
        self._subscribe(channel_topic(channel), player.id)
        return True

    def unsubscribe(self, player: Player, channel: str) -> bool:
        """Stop ``player`` hearing ``channel``; False if they were not subscribed."""
        if channel not in player.channels:
            return False
        player.channels.discard(channel)
        self._unsubscribe(channel_topic(channel), player.id)
        return True

    def _subscribe(self, topic: str, player_id: str) -> None:
        listeners = self.room_subscriptions.get(topic)
        if listeners is None:
            listeners = self.room_subscriptions[topic] = set()
            self.backplane.subscribe(topic)
        listeners.add(player_id)

    def _unsubscribe(self, topic: str, player_id: str) -> None:
        listeners = self.room_subscriptions.get(topic)
        if listeners is None:
            return
        listeners.discard(player_id)
        if not listeners:
            del self.room_subscriptions[topic]
            self.backplane.unsubscribe(topic)

    # Messages

    def event(self, name: str, **fields: Any) -> Outgoing:
        """Encode an event once, stamped with the time and the hub's sequence number."""
        self._seq += 1
        fields["ts"] = round(self.wall_clock(), 3)
        fields["seq"] = self._seq
        return encode_event(name, fields)

    def publish(self, topic: str, message: Outgoing) -> None:
        self.backplane.publish(topic, message)

    def broadcast_room(self, room: str, message: Outgoing) -> None:
        self.publish(room_topic(room), message)

    def broadcast_channel(self, channel: str, message: Outgoing) -> None:
        self.publish(channel_topic(channel), message)

    def send_to_player(
        self, player_id: str, message: Outgoing, sender: str | None = None
    ) -> Delivery:
        """Send to a player wherever they are; queue it if they left recently.

        Never waits: a player held by another node is reached through the backplane, which
        delivers or queues the message there (``Delivery.ROUTED``). What is queued is capped
        per player, per ``sender`` (a player; None for the game itself) and, all together, in
        bytes; past a cap the message is refused and nothing queued is pushed out.
        """
        if player_id in self.online_players:
            self.publish(player_topic(player_id), message)
            return Delivery.SENT
        if self.backplane.clustered:
            self.backplane.route(player_id, message, sender)
            return Delivery.ROUTED
        return self._queue(player_id, message, sender)

    async def tell(self, player_id: str, message: Outgoing, sender: str | None = None) -> Delivery:
        """``send_to_player``, waiting for the cluster to say what became of the message."""
        if player_id in self.online_players or not self.backplane.clustered:
            return self.send_to_player(player_id, message, sender)
        delivery = await self.backplane.send_direct(player_id, message, sender)
        return self._queue(player_id, message, sender) if delivery is None else delivery

    def _queue(self, player_id: str, message: Outgoing, sender: str | None) -> Delivery:
        if player_id not in self.last_seen:
            return Delivery.UNKNOWN_PLAYER
        refused = self.pending_messages.append(player_id, message, sender)
        if refused is Refused.SENDER_FULL:
            return Delivery.SENDER_FULL
        if refused is Refused.MAILBOX_FULL:
            return Delivery.MAILBOX_FULL
        return Delivery.QUEUED

    # What game code calls, from a command or from outside any connection (a tick, an NPC).

    def send_event(self, player_id: str, event: str, **fields: Any) -> bool:
        """Send ``event`` to one player, queued if they left recently; False if they are
        unknown (or away with a full mailbox)."""
        delivery = self.send_to_player(player_id, self.event(event, **fields))
        return delivery in (Delivery.SENT, Delivery.QUEUED, Delivery.ROUTED)

    def room_event(self, room: str, event: str, **fields: Any) -> None:
        """Send ``event`` to everyone in ``room``."""
        self.broadcast_room(room, self.event(event, room=room, **fields))

    def channel_event(self, channel: str, event: str, **fields: Any) -> None:
        """Send ``event`` to everyone subscribed to ``channel``."""
        self.broadcast_channel(channel, self.event(event, channel=channel, **fields))

    def players_in(self, room: str) -> list[str]:
        """The players in ``room`` now, sorted."""
        return sorted(self.room_occupants.get(room, ()))

    def room_of(self, player_id: str) -> str | None:
        """The room ``player_id`` is in, or None if they are not online."""
        player = self.online_players.get(player_id)
        return None if player is None else player.room

    def move_player(self, player_id: str, room: str) -> bool:
        """Move an online player (a game's teleport); False if they are not online."""
        player = self.online_players.get(player_id)
        if player is None:
            return False
        self.move(player, room)
        return True

    def deliver(self, topic: str, message: Outgoing) -> None:
        """Queue ``message`` for every local listener of ``topic`` (the backplane's callback).

        Never awaits: a slow recipient is closed by its own outbox, not waited for.
        """
        kind, _, name = topic.partition(":")
        if kind == "player":
            self._send_local(name, message)
            return
        for player_id in self.room_subscriptions.get(topic, ()):
            self._send_local(player_id, message)

    def _send_local(self, player_id: str, message: Outgoing) -> None:
        for conn in self.player_websockets.get(player_id, ()):
            conn.send(message)

    # The cluster (the backplane's Node protocol, and what commands ask of other nodes)

    def _announce(self, player_id: str) -> None:
        # Only with a cluster to tell: one process alone (or Redis away) needs no presence,
        # and a returning Redis gets every player at once (Node.presence).
        if self.backplane.clustered:
            self.backplane.announce(player_id, self._presence(player_id))

    def _presence(self, player_id: str) -> Presence:
        player = self.online_players[player_id]
        # Wall-clock times, so nodes can tell which of a player's connections is oldest.
        offset = self.wall_clock() - self.clock()
        opened = tuple(
            round(conn.connected_at + offset, 3) for conn in self.player_websockets[player_id]
        )
        return Presence(self.backplane.node_id, player.room, opened)

    def presence(self) -> dict[str, Presence]:
        return {player_id: self._presence(player_id) for player_id in self.player_websockets}

    def evict(self, player_id: str, count: int) -> None:
        for conn in self.player_websockets.get(player_id, [])[:count]:
            conn.close(CloseCode.REPLACED)
            self.disconnect(conn)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.settings.node_name,
            "connections": len(self.connection_timestamps),
            "players": len(self.online_players),
            **self.health(),
        }

    async def settle(self, conn: Connection) -> None:
        """The cluster's side of a new connection, before the player is welcomed: their
        subscriptions in force in Redis (so a tell sent the moment they are welcomed reaches
        them), what was queued for them on other nodes, and ``max_connections_per_player``
        across the cluster. Without a reachable cluster, only the welcome (if still due)."""
        elsewhere: list[Outgoing] = []
        if self.backplane.clustered:
            try:
                await self.backplane.settled()
                elsewhere = await self.backplane.take_pending(conn.player_id)
                await self._hold_connection_cap(conn)
            except Exception:  # the cluster's trouble never reaches the player
                logger.exception("settling %s in the cluster failed", conn.player_id)
        if not conn.welcomed:
            self._welcome(conn, elsewhere)
        else:
            conn.send_backlog(elsewhere)

    async def _hold_connection_cap(self, conn: Connection) -> None:
        cluster = await self.backplane.cluster_presence(conn.player_id)
        elsewhere = (cluster or {}).get(conn.player_id, [])
        own = self.player_websockets.get(conn.player_id, [])
        excess = len(own) + sum(len(p.connected_at) for p in elsewhere)
        excess -= self.settings.max_connections_per_player
        if excess <= 0:
            return
        # The oldest connections go, wherever they are.
        here = self._presence(conn.player_id) if own else None
        candidates = [
            (opened, presence.node)
            for presence in (*elsewhere, *([here] if here else []))
            for opened in presence.connected_at
        ]
        by_node: dict[str, int] = {}
        for _, node in heapq.nsmallest(excess, candidates):
            by_node[node] = by_node.get(node, 0) + 1
        for node, count in by_node.items():
            if node == self.backplane.node_id:
                self.evict(conn.player_id, count)
            else:
                self.backplane.evict(node, conn.player_id, count)

    async def who(self) -> list[str]:
        """Every player online, on this node and (when reachable) every other, sorted."""
        players = set(self.online_players)
        players.update(await self.backplane.cluster_presence() or ())
        return sorted(players)

    async def occupants(self, room: str) -> list[str]:
        """The players in ``room``, on this node and (when reachable) every other, sorted."""
        players = set(self.room_occupants.get(room, ()))
        for player_id, seen in (await self.backplane.cluster_presence() or {}).items():
            if any(presence.room == room for presence in seen):
                players.add(player_id)
        return sorted(players)

    # Monitoring

    def stats(self) -> dict[str, int]:
        """The size of every structure, and the hub's counters."""
        outbox_bytes = outbox_messages = 0
        for conn in self.connections():
            outbox_bytes += conn.outbox_bytes
            outbox_messages += conn.outbox_messages
        return {
            "active_websockets": len(self.active_websockets),
            "active_sse": len(self.active_sse),
            "total_connections": len(self.connection_timestamps),
            "player_websockets": len(self.player_websockets),
            "connection_timestamps": len(self.connection_timestamps),
            "online_players": len(self.online_players),
            "room_occupants": len(self.room_occupants),
            "room_subscriptions": len(self.room_subscriptions),
            "last_seen": len(self.last_seen),
            "connection_attempts": len(self.connection_attempts),
            "message_rate_limits": len(self.message_rates),
            "pending_messages": len(self.pending_messages),
            "pending_message_entries": self.pending_messages.items_held,
            "pending_message_bytes": self.pending_messages.size_bytes,
            "pending_messages_refused": self.pending_messages.refusals,
            "outbox_messages": outbox_messages,
            "outbox_bytes": outbox_bytes,
            "connections_opened": self.connections_opened,
            "slow_consumer_disconnects": self.slow_consumer_disconnects,
            "refused_connections": sum(self.refused_by_reason.values()),
            **self.backplane.stats(),
        }
