"""Topics on this node: who is in which room, and who listens to which topic (a room, a
channel, or a player's own topic).

``Topics`` is the only writer of both structures and the only caller of the backplane's
``subscribe`` and ``unsubscribe``, so the backplane's subscriptions always mirror the topics
that have a local listener (the Redis backplane's subscription bound relies on it). Bounded by
the players online: a set goes when its last member leaves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType

from ..backplane import Backplane
from ..backplane.topic import Topic, channel_topic, player_topic, room_topic
from .registry import LOBBY, Player

__all__ = ["Topics"]

_NOBODY: frozenset[str] = frozenset()


class Topics:
    """Room occupants and topic listeners (a player listens to their room, their channels
    and their own topic)."""

    def __init__(self, backplane: Backplane, max_channels_per_player: int) -> None:
        self._backplane = backplane
        self._max_channels = max_channels_per_player
        self._occupants: dict[str, set[str]] = {}  # room_occupants
        self._listeners: dict[Topic, set[str]] = {}  # room_subscriptions (rooms and channels)
        self.occupants: Mapping[str, set[str]] = MappingProxyType(self._occupants)
        self.topic_listeners: Mapping[Topic, set[str]] = MappingProxyType(self._listeners)

    def listeners(self, topic: Topic) -> Collection[str]:
        """The players on this node who hear ``topic``'s messages (a room or a channel)."""
        return self._listeners.get(topic, _NOBODY)

    def in_room(self, room: str) -> Collection[str]:
        return self._occupants.get(room, _NOBODY)

    # A player's arrival and departure

    def arrive(self, player: Player, room: str = LOBBY) -> None:
        """A player came online: they hear their own topic and stand in ``room`` (the lobby,
        or where they were before a reconnect)."""
        self._backplane.subscribe(player_topic(player.id))
        self.enter(player, room)

    def depart(self, player: Player) -> None:
        """A player went offline: out of their room, their channels and their own topic."""
        self.leave(player)
        for channel in player.channels:
            self._unlisten(channel_topic(channel), player.id)
        player.channels.clear()
        self._backplane.unsubscribe(player_topic(player.id))

    # Rooms and channels

    def enter(self, player: Player, room: str) -> None:
        player.room = room
        self._occupants.setdefault(room, set()).add(player.id)
        self._listen(room_topic(room), player.id)

    def leave(self, player: Player) -> None:
        occupants = self._occupants.get(player.room)
        if occupants is not None:
            occupants.discard(player.id)
            if not occupants:
                del self._occupants[player.room]
        self._unlisten(room_topic(player.room), player.id)

    def join(self, player: Player, channel: str) -> bool:
        """Add ``channel`` to what ``player`` hears; False past max_subscriptions_per_player."""
        if channel in player.channels:
            return True
        if len(player.channels) >= self._max_channels:
            return False
        player.channels.add(channel)
        self._listen(channel_topic(channel), player.id)
        return True

    def part(self, player: Player, channel: str) -> bool:
        """Stop ``player`` hearing ``channel``; False if they were not subscribed."""
        if channel not in player.channels:
            return False
        player.channels.discard(channel)
        self._unlisten(channel_topic(channel), player.id)
        return True

    def _listen(self, topic: Topic, player_id: str) -> None:
        listeners = self._listeners.get(topic)
        if listeners is None:
            listeners = self._listeners[topic] = set()
            self._backplane.subscribe(topic)
        listeners.add(player_id)

    def _unlisten(self, topic: Topic, player_id: str) -> None:
        listeners = self._listeners.get(topic)
        if listeners is None:
            return
        listeners.discard(player_id)
        if not listeners:
            del self._listeners[topic]
            self._backplane.unsubscribe(topic)

    # Repair

    def repair(self, online: Mapping[str, Player], dry_run: bool) -> int:
        """Remove occupants and listeners who are not online (a bug's leftovers); a topic
        left without listeners is unsubscribed, as when its last listener leaves."""
        fixed = 0
        for room, members in list(self._occupants.items()):
            orphans = [p for p in members if p not in online]
            fixed += len(orphans)
            if not dry_run:
                members.difference_update(orphans)
                if not members:
                    del self._occupants[room]
        for topic, members in list(self._listeners.items()):
            orphans = [p for p in members if p not in online]
            fixed += len(orphans)
            if not dry_run:
                for player_id in orphans:
                    self._unlisten(topic, player_id)
        return fixed
