"""The Backplane protocol: the one way a hub's fan-out and presence leave the process.

A hub delivers every room, channel and direct message to its own listeners and publishes it
to a topic (``room:NAME``, ``channel:NAME``, ``player:ID``; topic.py) for the others; it
subscribes to a topic only while it has a local listener for it. The backplane hands each
message published elsewhere to ``Node.deliver`` of every other hub subscribed to its topic
(the in-process backplane has no other hub).

The cluster questions (who is online elsewhere, send to a player held elsewhere, what was queued
for a player elsewhere) are asynchronous and answer ``None`` when there is no cluster to ask:
the in-process backplane, or Redis while it is away. The hub then answers from what it holds.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol import Outgoing
from .history import Recovery
from .kept_order import Deliver
from .topic import Topic

__all__ = ["Backplane", "BackplaneStats", "Delivery", "HealthProvider", "Node", "Presence"]


@dataclass(frozen=True, slots=True)
class Presence:
    """One player as seen by one node: their room and when each of their connections there
    opened (wall-clock seconds, oldest first)."""

    node: str
    room: str
    connected_at: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackplaneStats:
    """The sizes of a Redis backplane's own structures, and its counters."""

    up: bool  # Redis can be reached now
    subscriptions: int  # channels this node listens to
    queue: int  # commands waiting to be written
    pending_players: int  # players away with messages waiting in Redis (every node's)
    pending_bytes: int
    published: int
    received: int
    dropped: int
    reconnects: int
    invalid: int  # records no mudgate node wrote, skipped
    history_kept: int  # room and channel events this node published that Redis numbered
    history_dropped: int  # those Redis never numbered: delivered here as they were, unkept
    history_topics: int  # rooms and channels whose position Redis keeps (all nodes')
    history_bytes: int  # bytes of the events Redis keeps for them (all nodes')
    order_waiting: int  # direct deliveries waiting behind this node's kept events now
    order_unordered: int  # ... made before them instead (past the cap or the timeout)

    def as_dict(self) -> dict[str, int]:
        """Every figure, prefixed ``backplane_`` (the monitoring JSON's flat names)."""
        return {
            f"backplane_{field.name}": int(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }


# What the cluster view shows of a node besides its counts (its memory and alerts), read each
# time the node renews its lease.
HealthProvider = Callable[[], Mapping[str, object]]


class Delivery(enum.Enum):
    """What became of a message sent to one player."""

    SENT = "sent"  # a connection of theirs has it queued (here or on another node)
    QUEUED = "queued"  # they left recently: it waits for them (here or in Redis)
    ROUTED = "routed"  # handed to the cluster, which delivers or queues it
    UNKNOWN_PLAYER = "unknown_player"  # nobody holds them and nobody has seen them lately
    MAILBOX_FULL = "mailbox_full"  # they are away and their messages fill their (or all) caps
    SENDER_FULL = "sender_full"  # the sender has max_pending_per_sender messages waiting


class Node(Protocol):
    """What a backplane asks of the hub it serves."""

    def deliver(self, topic: Topic, message: Outgoing) -> None:
        """Queue ``message``, published on another node, for every local listener of
        ``topic``; never awaits."""

    def evict(self, player_id: str, count: int) -> None:
        """Close this node's ``count`` oldest connections of ``player_id`` (4009)."""

    def presence(self) -> dict[str, Presence]:
        """Every player on this node, to announce in full (at start and after a reconnect)."""

    def status(self) -> dict[str, Any]:
        """A small summary of this node for the cluster view (its name and counts)."""


class Backplane(Protocol):
    """Publish/subscribe and presence between hubs. Nothing here that a player's message
    passes through ever waits: fan-out must not block."""

    node_id: str

    async def start(self, node: Node, health: HealthProvider) -> None:
        """Start delivering messages for subscribed topics to ``node``; ``health`` joins the
        node's own status in the summary other nodes see."""

    async def close(self) -> None:
        """Stop delivering, withdraw this node's presence, and release every resource."""

    def publish(self, topic: Topic, message: Outgoing) -> None:
        """Send ``message`` to every other hub subscribed to ``topic`` (this one has
        delivered it already)."""

    @property
    def keeps_history(self) -> bool:
        """Whether the cluster numbers and keeps room and channel events now (Redis, while it
        can be reached): the hub then publishes them with ``publish_kept`` and answers resumes
        with ``recover``. Otherwise the hub numbers and keeps them itself (history.py)."""

    def publish_kept(self, topic: Topic, message: Outgoing) -> None:
        """Number ``message`` (its topic's next offset, in the topic's epoch), keep it in the
        topic's history and deliver it to every hub listening to ``topic``, this one included
        (``Node.deliver``, with ``message.offset`` set). Never waits. Should the cluster be
        lost before it is numbered, it is delivered here as it is, without an offset."""

    def after_kept(self, deliver: Deliver) -> None:
        """Call ``deliver`` (a delivery of this node's own: a message to a player here, a
        command's reply) once every kept event this node published before has been delivered
        here or given up, so that its players see what it made in the order it made it; at
        once when none is on its way. Never waits; bounded (kept_order.py): past a cap of
        deliveries waiting, or after ``backplane_timeout``, it is called out of order (and
        counted); on ``close`` every one waiting is called."""

    async def recover(self, topic: Topic, offset: int, epoch: str) -> Recovery | None:
        """What ``topic`` said after ``offset`` in ``epoch`` (history.py's ``decide``), or
        None when the cluster cannot be asked now."""

    def subscribe(self, topic: Topic) -> None:
        """Receive messages published to ``topic``."""

    def unsubscribe(self, topic: Topic) -> None:
        """Stop receiving messages published to ``topic``."""

    async def settled(self) -> None:
        """Return once every subscription asked for so far is in force across the cluster
        (or at once, with no cluster); waits at most a bounded time."""

    def announce(self, player_id: str, presence: Presence | None, left_room: str = "") -> None:
        """Tell the cluster where ``player_id`` is on this node (None: gone from this node)."""

    async def last_room(self, player_id: str) -> str | None:
        """The room ``player_id`` was in when they left the node that held them, if they left
        within ``last_seen_ttl`` (the cluster's record; None: not known, or no cluster)."""

    def evict(self, node_id: str, player_id: str, count: int) -> None:
        """Ask node ``node_id`` to close its ``count`` oldest connections of ``player_id``."""

    @property
    def clustered(self) -> bool:
        """Whether other nodes can be reached now (the cluster questions get answers)."""

    @property
    def problem(self) -> str | None:
        """Why the cluster cannot be reached (or a part of it fails: Redis refusing the
        mailbox), while so; None when all is well."""

    def route(self, player_id: str, message: Outgoing, sender: str | None) -> None:
        """Send to a player held elsewhere, or queue it for them, without waiting for the
        outcome (game code's ``Hub.send``). ``sender`` is the player whose share of what
        is queued it counts against (None: the game's own)."""

    async def send_direct(
        self, player_id: str, message: Outgoing, sender: str | None
    ) -> Delivery | None:
        """Send to a player held elsewhere, or queue it for them in the cluster."""

    async def take_pending(self, player_id: str) -> list[Outgoing]:
        """What was queued for ``player_id`` in the cluster while they were away; removed."""

    async def cluster_presence(
        self, player_id: str | None = None
    ) -> dict[str, list[Presence]] | None:
        """The players on every other live node (or only ``player_id``), by player id."""

    async def nodes(self) -> list[dict[str, Any]] | None:
        """Every live node's latest summary, this one included."""

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        """Whether this node holds the lease ``name`` for the next ``ttl_seconds`` (a float,
        seconds): taken now if no node held it, or renewed if this node did. At most one node
        of the cluster holds a lease at a time, so a game's timer that acts only while its node
        holds the lease acts once per cluster however many nodes (or workers) run it; when the
        holder dies, the first node to ask after its lease ran out takes it over (within
        ``ttl_seconds`` of the holder's last renewal).

        Ask at every tick, with ``ttl_seconds`` longer than the time between ticks (twice it,
        say), so the holder renews before its lease runs out. Never raises for the cluster's
        trouble: False while the cluster cannot be asked (Redis away or failing), as no node
        can then know it is the only one. The in-process backplane, the whole cluster by
        itself, always answers True.
        """

    def stats(self) -> BackplaneStats | None:
        """The sizes of the backplane's own structures, and its counters (None: nothing of
        its own to count)."""
