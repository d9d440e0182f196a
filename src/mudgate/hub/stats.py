"""What monitoring reads of the hub: the size of every structure, and its counters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..backplane import BackplaneStats

__all__ = ["STRUCTURE_NAMES", "HubStats"]

# The hub's structures under their operators' names (DESIGN.md section 3): what a
# LARGE_STRUCTURE alert watches, /metrics' mudgate_structure_entries labels and the history.
STRUCTURE_NAMES = (
    "active_websockets",
    "active_sse",
    "active_telnet",
    "player_websockets",
    "connection_timestamps",
    "online_players",
    "room_occupants",
    "room_subscriptions",
    "last_seen",
    "connection_attempts",
    "message_rate_limits",
    "pending_messages",
    "room_history",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    # The structures (STRUCTURE_NAMES).
    active_websockets: int
    active_sse: int
    active_telnet: int
    player_websockets: int  # players with a connection here (any transport)
    connection_timestamps: int
    online_players: int
    room_occupants: int  # rooms with someone in them
    room_subscriptions: int  # topics (rooms and channels) with a listener here
    last_seen: int
    connection_attempts: int
    message_rate_limits: int
    pending_messages: int  # players with messages waiting
    room_history: int  # rooms and channels whose position (and recent events) are kept
    # What they hold, and the counters.
    total_connections: int
    pending_message_entries: int
    pending_message_bytes: int
    pending_messages_refused: int
    outbox_messages: int
    outbox_bytes: int
    connections_opened: int
    slow_consumer_disconnects: int
    refused_connections: int
    commands_in_flight: int  # POST /commands under way
    commands_refused: int  # refused at a cap of commands under way (429)
    room_history_entries: int  # events kept for players who reconnect
    room_history_bytes: int  # ... their bytes and overhead
    room_history_evicted: int  # events let go early, at a cap (count, bytes, topics)
    resumes: int  # rooms and channels asked to resume
    resumes_recovered: int  # ... which got back all they missed
    resumes_not_recovered: int  # ... which were told recovered: false
    events_replayed: int
    backplane: BackplaneStats | None  # None: the in-process backplane, nothing to count

    def structures(self) -> dict[str, int]:
        """The size of every structure, by its operators' name."""
        return {name: getattr(self, name) for name in STRUCTURE_NAMES}

    def as_dict(self) -> dict[str, int]:
        """Every figure flat, the backplane's prefixed ``backplane_`` (the monitoring JSON)."""
        figures = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "backplane"
        }
        if self.backplane is not None:
            figures |= self.backplane.as_dict()
        return figures
