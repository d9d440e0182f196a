"""Topics: what a message is published to, spelled in one place.

A room, a channel and a player each have a topic (``room:NAME``, ``channel:NAME``,
``player:ID``). The hub publishes to topics and subscribes to them while it has a local
listener; the Redis backplane uses them, under its prefix, as pub/sub channels.
"""

from __future__ import annotations

import enum
from typing import NewType

__all__ = ["Topic", "TopicKind", "channel_topic", "player_of", "player_topic", "room_topic"]

Topic = NewType("Topic", str)


class TopicKind(enum.StrEnum):
    ROOM = "room"
    CHANNEL = "channel"
    PLAYER = "player"


_PLAYER_PREFIX = f"{TopicKind.PLAYER}:"
_PLAYER_PREFIX_LENGTH = len(_PLAYER_PREFIX)


def room_topic(room: str) -> Topic:
    return Topic(f"{TopicKind.ROOM}:{room}")


def channel_topic(channel: str) -> Topic:
    return Topic(f"{TopicKind.CHANNEL}:{channel}")


def player_topic(player_id: str) -> Topic:
    return Topic(f"{_PLAYER_PREFIX}{player_id}")


def player_of(topic: str) -> str | None:
    """The player whose topic ``topic`` is, or None for a room's or a channel's."""
    return topic[_PLAYER_PREFIX_LENGTH:] if topic.startswith(_PLAYER_PREFIX) else None
