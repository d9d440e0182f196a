"""This node's part in a cluster: where its players are, the per-player connection cap across
nodes, and who is online anywhere.

Everything here asks the backplane and reads the node's registry; it changes neither. With no
cluster to ask (the in-process backplane, or Redis while it is away) every answer comes from
this node alone.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..backplane import Backplane, Presence
from ..protocol import Outgoing

if TYPE_CHECKING:
    from ..connection import Connection
    from .registry import Registry

__all__ = ["ClusterPresence"]

logger = logging.getLogger("mudgate.hub")


class ClusterPresence:
    """This node's players as the cluster sees them (asked of the backplane, computed from the
    registry); changes neither."""

    def __init__(
        self,
        backplane: Backplane,
        registry: Registry,
        max_connections_per_player: int,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._backplane = backplane
        self._registry = registry
        self._max_per_player = max_connections_per_player
        self._clock = clock
        self._wall_clock = wall_clock

    # Presence

    def announce(self, player_id: str) -> None:
        """Tell the cluster where ``player_id`` is on this node now. Only with a cluster to
        tell: one process alone (or Redis away) needs no presence, and a returning Redis gets
        every player at once (``presence``)."""
        if self._backplane.clustered:
            self._backplane.announce(player_id, self.presence_of(player_id))

    def withdraw(self, player_id: str, room: str = "") -> None:
        """``player_id`` has no connection left on this node; they left from ``room``."""
        self._backplane.announce(player_id, None, room)

    def presence_of(self, player_id: str) -> Presence:
        player = self._registry.players[player_id]
        # Wall-clock times, so nodes can tell which of a player's connections is oldest.
        offset = self._wall_clock() - self._clock()
        opened = tuple(
            round(conn.connected_at + offset, 3)
            for conn in self._registry.player_connections[player_id]
        )
        return Presence(self._backplane.node_id, player.room, opened)

    def presence(self) -> dict[str, Presence]:
        """Every player with a connection on this node (what a node announces in full)."""
        return {
            player_id: self.presence_of(player_id)
            for player_id in self._registry.player_connections
        }

    # A new connection

    async def settle(self, conn: Connection) -> tuple[list[Outgoing], int]:
        """The cluster's side of a new connection, before its player is welcomed: their
        subscriptions in force in Redis (so a tell sent the moment they are welcomed reaches
        them), what was queued for them on other nodes, and how many of their connections on
        this node must go to keep ``max_connections_per_player`` across the cluster (the
        others' are evicted from here)."""
        if not self._backplane.clustered:
            return [], 0
        try:
            await self._backplane.settled()
            elsewhere = await self._backplane.take_pending(conn.player_id)
            return elsewhere, await self._excess(conn.player_id)
        except Exception:  # the cluster's trouble never reaches the player
            logger.exception("settling %s in the cluster failed", conn.player_id)
            return [], 0

    async def _excess(self, player_id: str) -> int:
        seen = await self._backplane.cluster_presence(player_id)
        elsewhere = (seen or {}).get(player_id, [])
        here = (
            [self.presence_of(player_id)]
            if self._registry.player_connections.get(player_id)
            else []
        )
        candidates = [
            (opened, presence.node)
            for presence in (*elsewhere, *here)
            for opened in presence.connected_at
        ]
        excess = len(candidates) - self._max_per_player
        if excess <= 0:
            return 0
        # The oldest connections go, wherever they are.
        by_node = Counter(node for _, node in heapq.nsmallest(excess, candidates))
        for node, count in by_node.items():
            if node != self._backplane.node_id:
                self._backplane.evict(node, player_id, count)
        return by_node[self._backplane.node_id]

    # Who is where

    async def who(self) -> list[str]:
        """Every player online, on this node and (when reachable) every other, sorted."""
        players = set(self._registry.players)
        players.update(await self._backplane.cluster_presence() or ())
        return sorted(players)

    async def occupants(self, room: str, here: Iterable[str]) -> list[str]:
        """The players in ``room``: ``here`` (this node's) and (when reachable) every other
        node's, sorted."""
        players = set(here)
        for player_id, seen in (await self._backplane.cluster_presence() or {}).items():
            if any(presence.room == room for presence in seen):
                players.add(player_id)
        return sorted(players)
