"""Who may connect, and how fast a player may send: the hub's door.

``Admission`` is the only writer of the connection-attempt windows, the players' message
buckets, the counts of commands under way, the refusal counters and the shedding switch. The
rate limiters are capped in keys and entries and expire by TTL; the counts of commands under
way lose a key with its last command (mudgate.bounded).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..bounded import InFlight, SlidingWindowLimiter, TokenBuckets
from ..protocol import CloseCode
from ..settings import Settings

__all__ = ["Admission", "Refusal", "RefusalReason"]

logger = logging.getLogger("mudgate.hub")


class RefusalReason(enum.StrEnum):
    """Why a connection may be refused, each counted for /metrics (the label's value)."""

    RATE_LIMITED = "too many connection attempts"
    MEMORY_PRESSURE = "memory pressure"
    SERVER_FULL = "server full"
    TOO_MANY_PLAYERS = "too many players online"
    SHUTTING_DOWN = "shutting down"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new connection was refused, and when the client may try again."""

    code: CloseCode
    reason: RefusalReason
    retry_after_seconds: int


class Admission:
    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self._settings = settings
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
        # POST /commands requests under way (their body arriving, then their dispatch), per
        # player and per address: one player's slow bodies cannot hold every socket.
        self.commands_by_player = InFlight(
            settings.max_commands_in_flight_per_player, settings.max_sockets
        )
        self.commands_by_address = InFlight(
            settings.max_commands_in_flight_per_address, settings.max_sockets
        )
        self.refused: dict[RefusalReason, int] = dict.fromkeys(RefusalReason, 0)
        # Set under memory pressure: new connections are refused, existing ones keep playing.
        self.shedding = False
        self.closing = False  # shutting down: no new connections

    def admit(
        self, player_id: str, remote: str, *, connections: int, players: int, online: bool
    ) -> Refusal | None:
        """Decide whether a new connection from ``player_id`` at ``remote`` may open, given
        the node's ``connections`` and ``players`` and whether the player is ``online``."""
        # Both keys are charged, so neither many players behind one address nor one player
        # from many addresses can hammer the server.
        for key in (f"ip:{remote}", f"player:{player_id}"):
            if not self.connection_attempts.hit(key):
                retry_after = math.ceil(self.connection_attempts.retry_after(key))
                return self._refuse(CloseCode.RATE_LIMITED, RefusalReason.RATE_LIMITED, retry_after)
        if self.closing:
            return self._refuse(CloseCode.SERVICE_RESTART, RefusalReason.SHUTTING_DOWN, 5)
        if self.shedding:
            return self._refuse(CloseCode.TRY_AGAIN_LATER, RefusalReason.MEMORY_PRESSURE, 30)
        if connections >= self._settings.max_connections:
            return self._refuse(CloseCode.TRY_AGAIN_LATER, RefusalReason.SERVER_FULL, 30)
        if not online and players >= self._settings.max_players:
            return self._refuse(CloseCode.TRY_AGAIN_LATER, RefusalReason.TOO_MANY_PLAYERS, 30)
        return None

    def _refuse(self, code: CloseCode, reason: RefusalReason, retry_after: int) -> Refusal:
        self.refused[reason] += 1
        return Refusal(code, reason, retry_after)

    def close(self) -> None:
        """Shutting down: every new connection is refused from now on."""
        self.closing = True

    def charge_message(self, player_id: str) -> tuple[float, bool]:
        """Count a frame ``player_id`` sent: the seconds they must wait before the next (0:
        serve this one), and whether they are over the limit (they kept sending while told
        to wait: the connection goes)."""
        wait = self.message_rates.take(player_id)
        if wait == math.inf:
            return self.message_rates.refill_seconds, True
        return wait, False

    def begin_command(self, player_id: str, remote: str) -> bool:
        """Count a command request of ``player_id`` from ``remote`` as under way; False
        (nothing counted) when either already has as many as it may."""
        if not self.commands_by_player.enter(player_id):
            return False
        if not self.commands_by_address.enter(remote):
            self.commands_by_player.leave(player_id)
            return False
        return True

    def end_command(self, player_id: str, remote: str) -> None:
        """A command request counted by ``begin_command`` is over."""
        self.commands_by_player.leave(player_id)
        self.commands_by_address.leave(remote)

    def set_shedding(self, shedding: bool, connections: int) -> None:
        """Refuse (or again accept) new connections; existing players keep playing."""
        if shedding != self.shedding:
            self.shedding = shedding
            logger.warning(
                "shedding started: refusing new connections"
                if shedding
                else "shedding stopped: accepting new connections",
                extra={"shedding": shedding, "connections": connections},
            )
