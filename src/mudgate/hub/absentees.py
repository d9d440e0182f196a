"""What this node keeps for players who left recently: when they were last seen, and what was
sent to them meanwhile. Both are capped in players and entries and expire by TTL
(mudgate.bounded); ``Absentees`` is the only writer of either."""

from __future__ import annotations

from collections.abc import Callable

from ..backplane import Delivery
from ..bounded import Mailboxes, Refused, TTLMap
from ..protocol import Outgoing
from ..settings import Settings

__all__ = ["Absentees"]


class Absentees:
    """Players who left recently (``last_seen``) and the messages waiting for them
    (``pending_messages``)."""

    def __init__(
        self, settings: Settings, clock: Callable[[], float], wall_clock: Callable[[], float]
    ) -> None:
        self._wall_clock = wall_clock
        self.last_seen: TTLMap[str, float] = TTLMap(
            settings.max_players, settings.last_seen_ttl, clock=clock
        )
        # The room each left from: the only one a resume may put them back in.
        self.left_rooms: TTLMap[str, str] = TTLMap(
            settings.max_players, settings.last_seen_ttl, clock=clock
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

    def left(self, player_id: str, room: str = "") -> None:
        """Remember ``player_id`` for a while, so what is sent to them meanwhile waits, and
        the ``room`` they left from, where a resume may put them back."""
        self.last_seen.set(player_id, self._wall_clock())
        if room:
            self.left_rooms.set(player_id, room)

    def returned(self, player_id: str) -> str | None:
        """``player_id`` is online again: no longer away. The room they left from, if it is
        remembered."""
        self.last_seen.pop(player_id)
        return self.left_rooms.pop(player_id)

    def take(self, player_id: str) -> list[Outgoing]:
        """What waited for ``player_id``, in order (removed)."""
        return self.pending_messages.take(player_id)

    def queue(self, player_id: str, message: Outgoing, sender: str | None) -> Delivery:
        """Keep ``message`` for a player who left recently, within every cap."""
        if player_id not in self.last_seen:
            return Delivery.UNKNOWN_PLAYER
        refused = self.pending_messages.append(player_id, message, sender)
        if refused is Refused.SENDER_FULL:
            return Delivery.SENDER_FULL
        if refused is Refused.MAILBOX_FULL:
            return Delivery.MAILBOX_FULL
        return Delivery.QUEUED
