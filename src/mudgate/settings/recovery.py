"""What a player gets back after a reconnect: room and channel history (docs/protocol.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from .types import PositiveInt, PositiveSeconds


class Recovery(BaseModel):
    """Each room's and channel's recent events, kept so that a player who reconnects gets
    what they missed (in memory, or in Redis with `MUDGATE_BACKPLANE`), and how soon clients
    come back after a restart."""

    room_history_size: Annotated[int, Field(ge=0)] = Field(
        100,
        description="Events kept per room and per channel for players who reconnect; 0: none "
        "(events then carry no offset and a resume is never recovered).",
    )
    room_history_ttl: PositiveSeconds = Field(
        300.0,
        description="Seconds a room's or channel's event is kept; a player away longer is "
        "told that messages were lost (`recovered: false`).",
    )
    room_history_topic_bytes: PositiveInt = Field(
        64 * 1024,
        description="Bytes of events kept per room and per channel (each event counted with "
        "its overhead); the oldest go first.",
    )
    room_history_max_bytes: PositiveInt = Field(
        8 * 1024 * 1024,
        description="Bytes of events kept for all rooms and channels together (in the memory "
        "budget); past it the rooms that spoke least recently lose theirs first.",
    )
    room_history_max_topics: PositiveInt = Field(
        10_000,
        description="Rooms and channels whose position (epoch, latest offset) is remembered; "
        "past it the least recently spoken are forgotten.",
    )
    reconnect_window: Annotated[float, Field(ge=0, le=300)] = Field(
        5.0,
        description="Seconds over which clients spread their reconnects after a restart (1012) "
        "or a recycle (4010): told them in the welcome and in the close reason.",
    )
