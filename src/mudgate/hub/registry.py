"""Who is on this node: its connections and its players, and nothing else.

The registry is the only writer of the structures that say who is here; everything else reads
them through its read-only views. Bounded by admission (``max_connections``, ``max_players``)
and by ``remove`` being the one way out of every one of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from ..connection import Connection
from ..protocol import CloseCode, Outgoing

__all__ = ["EMPTY_STATE", "LOBBY", "Player", "Registry", "checked_state"]

LOBBY = "lobby"

_encode = msgspec.json.Encoder().encode


class Player:
    """A player online on this node: where they are and what they listen to."""

    __slots__ = ("channels", "connected_at", "id", "room", "state")

    def __init__(self, player_id: str, room: str, connected_at: float) -> None:
        self.id = player_id
        self.room = room
        self.channels: set[str] = set()
        self.connected_at = connected_at
        # What the game keeps for the player across its restarts (Hub.save_state): JSON,
        # bounded in bytes, and held as its bytes (a dict of it would take several times more).
        self.state = EMPTY_STATE


EMPTY_STATE = b"{}"


def checked_state(state: Mapping[str, Any], max_bytes: int) -> bytes:
    """``state`` as JSON, if it is a JSON object of at most ``max_bytes``; else ValueError
    saying what is wrong."""
    if not isinstance(state, Mapping):
        raise ValueError("a player's state must be a JSON object (a dict)")
    try:
        encoded = _encode(state)
    except (TypeError, msgspec.EncodeError) as error:
        raise ValueError(f"a player's state must be a JSON object: {error}") from None
    if len(encoded) > max_bytes:
        raise ValueError(
            f"a player's state is at most {max_bytes} bytes as JSON (MUDGATE_MAX_PLAYER_STATE_"
            f"BYTES); this one is {len(encoded)}"
        )
    return encoded


class Registry:
    """Connections by id (one table per transport) and by player, and the players online.

    ``add`` and ``remove`` keep the tables in step; ``repair_index`` and ``orphans`` help
    ``Hub.repair`` put them back in step should a bug ever part them (the janitor's
    reconciliation).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # The structures of DESIGN.md section 3 (their operators' names in HubStats).
        self._websockets: dict[str, Connection] = {}  # active_websockets
        self._sse: dict[str, Connection] = {}  # active_sse
        self._telnet: dict[str, Connection] = {}  # active_telnet
        self._opened_at: dict[str, float] = {}  # connection_timestamps
        self._by_player: dict[str, list[Connection]] = {}  # player_websockets (any transport)
        self._players: dict[str, Player] = {}  # online_players
        # Read-only views, for whoever needs to look.
        self.websockets: Mapping[str, Connection] = MappingProxyType(self._websockets)
        self.sse: Mapping[str, Connection] = MappingProxyType(self._sse)
        self.telnet: Mapping[str, Connection] = MappingProxyType(self._telnet)
        self.opened_at: Mapping[str, float] = MappingProxyType(self._opened_at)
        self.player_connections: Mapping[str, list[Connection]] = MappingProxyType(self._by_player)
        self.players: Mapping[str, Player] = MappingProxyType(self._players)

        self.opened = 0
        self.slow_consumer_disconnects = 0
        # When recent slow consumers were dropped, for the SLOW_CONSUMERS alert.
        self._slow_consumer_times: deque[float] = deque(maxlen=1000)
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._opened_at)

    def connections(self) -> Iterator[Connection]:
        yield from self._websockets.values()
        yield from self._sse.values()
        yield from self._telnet.values()

    def connections_of(self, player_id: str) -> list[Connection]:
        """``player_id``'s connections on this node, oldest first (a copy)."""
        return list(self._by_player.get(player_id, ()))

    def send(self, player_ids: Iterable[str], message: Outgoing) -> None:
        """Queue ``message`` on every connection of each of ``player_ids`` here."""
        by_player = self._by_player
        for player_id in player_ids:
            for conn in by_player.get(player_id, ()):
                conn.send(message)
        message.drop_views()

    async def emptied(self) -> None:
        """Return once no connection is registered."""
        await self._empty.wait()

    def recent_slow_consumers(self, window_seconds: float) -> int:
        cutoff = self._clock() - window_seconds
        return sum(1 for at in self._slow_consumer_times if at > cutoff)

    def add(self, conn: Connection) -> tuple[Player, bool]:
        """Register ``conn``: its player (new in the lobby if they were not online) and
        whether they just arrived."""
        self._table(conn)[conn.id] = conn
        self._opened_at[conn.id] = conn.connected_at
        self.opened += 1
        self._empty.clear()
        player = self._players.get(conn.player_id)
        arrived = player is None
        if player is None:
            player = self._players[conn.player_id] = Player(
                conn.player_id, LOBBY, conn.connected_at
            )
        self._by_player.setdefault(conn.player_id, []).append(conn)
        return player, arrived

    def remove(self, conn: Connection) -> tuple[bool, Player | None]:
        """Unregister ``conn``: whether it was registered, and its player if that was their
        last connection (they are no longer online). Idempotent."""
        if self._table(conn).pop(conn.id, None) is None:
            return False, None
        self._opened_at.pop(conn.id, None)
        if conn.close_code is CloseCode.SLOW_CONSUMER:
            self.slow_consumer_disconnects += 1
            self._slow_consumer_times.append(self._clock())
        if not self._opened_at:
            self._empty.set()
        own = self._by_player.get(conn.player_id)
        if own is None:
            return True, None
        own.remove(conn)
        if own:
            return True, None
        del self._by_player[conn.player_id]
        return True, self._players.pop(conn.player_id, None)

    def _table(self, conn: Connection) -> dict[str, Connection]:
        name = conn.transport.name
        if name == "sse":
            return self._sse
        return self._telnet if name == "telnet" else self._websockets

    # Repair: should a bug ever part the tables, the janitor puts them back in step.

    def repair_index(self, dry_run: bool) -> int:
        """Index entries whose connection is gone, and connections missing from the index."""
        registered = {conn.id for conn in self.connections()}
        fixed = 0
        for player_id, own in list(self._by_player.items()):
            lost = [conn for conn in own if conn.id not in registered]
            fixed += len(lost)
            if not dry_run:
                for conn in lost:
                    own.remove(conn)
                if not own:
                    del self._by_player[player_id]
        indexed = {conn.id for own in self._by_player.values() for conn in own}
        unindexed = [conn for conn in self.connections() if conn.id not in indexed]
        if not dry_run:
            for conn in unindexed:
                self._by_player.setdefault(conn.player_id, []).append(conn)
        return fixed + len(unindexed)

    def orphans(self) -> list[str]:
        """Players online without a connection."""
        return [player_id for player_id in self._players if player_id not in self._by_player]

    def drop(self, player_id: str) -> Player | None:
        """Take ``player_id`` offline if none of their connections is left; the player."""
        if self._by_player.get(player_id):
            return None
        self._by_player.pop(player_id, None)
        return self._players.pop(player_id, None)
