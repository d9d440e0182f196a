"""Every TCP connection the process holds, whatever it carries, under one cap.

A WebSocket player, an SSE stream, a scrape of ``/metrics`` and a socket that connected and
never sent a byte all hold a file descriptor, kernel buffers and a protocol object. The
``SocketTable`` counts them by what they are doing and keeps their number under
``max_sockets``: when a new one arrives at the cap, the one that has waited longest for a
request to arrive (a slow or silent client, or an idle keep-alive) is closed to make room; a
table full of requests in progress and players refuses the newcomer instead. A healthy client
sends its request within milliseconds, so it is never the oldest waiter for long, and a flood
of silent sockets evicts itself.

mudgate's protocol classes (``mudgate.server``) are the only writers; monitoring reads
``stats()``.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SocketEvent", "SocketKind", "SocketStats", "SocketTable", "Transport"]

logger = logging.getLogger("mudgate.sockets")

# Descriptors kept for everything that is not a client: the listening socket, Redis, webhooks,
# log files, /proc reads.
RESERVED_DESCRIPTORS = 64


class Transport(Protocol):
    """What the table needs of a connection: a way to drop it at once."""

    def abort(self) -> None: ...


class SocketKind(enum.Enum):
    """What a TCP connection is doing."""

    WAITING = "waiting"
    """Waiting for a request: just connected, or idle between two requests. Evicted first."""
    HTTP = "http"
    """A request being received or answered (an SSE stream is one long answer)."""
    WEBSOCKET = "websocket"
    """Upgraded to a WebSocket."""


class SocketEvent(enum.StrEnum):
    """What the protocol layer refused or ended, counted for monitoring."""

    REFUSED = "refused"
    """Closed on arrival: the table was full of requests and players."""
    EVICTED = "evicted"
    """Closed to make room for a new connection while it waited for a request."""
    TIMED_OUT = "timed_out"
    """Did not send a whole request within request_timeout (408, or closed if silent)."""
    HEAD_TOO_LARGE = "head_too_large"
    """Sent a request line or headers over max_request_head_bytes (414 or 431)."""
    MALFORMED = "malformed"
    """Sent something that is not HTTP/1.1 or not a valid WebSocket handshake (400)."""
    CONTROL_FLOOD = "control_flood"
    """Sent WebSocket pings faster than control_frame_limit allows (1008)."""


@dataclass(frozen=True, slots=True)
class SocketStats:
    """The table as monitoring shows it."""

    open: int
    capacity: int
    by_kind: dict[str, int]
    events: dict[str, int]


class SocketTable:
    """Open TCP connections by kind, capped at ``capacity``.

    Connections are identified by their transport. ``open`` admits one (evicting the longest
    waiter if it must), ``mark`` records what it is doing now, ``close`` forgets it; each is
    O(1).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._kinds: dict[Transport, SocketKind] = {}
        # The waiting ones, in the order they started waiting: the first is evicted first.
        self._waiting: dict[Transport, None] = {}
        self._counts: Counter[SocketKind] = Counter()
        self._events: Counter[SocketEvent] = Counter()

    def __len__(self) -> int:
        return len(self._kinds)

    def __contains__(self, transport: object) -> bool:
        return transport in self._kinds

    def fit(self, descriptor_limit: int) -> None:
        """Lower the capacity so that every connection can have a file descriptor: past the
        process's limit, accept() fails and the listening socket stops serving anyone."""
        usable = max(1, descriptor_limit - RESERVED_DESCRIPTORS)
        if usable < self.capacity:
            logger.warning(
                "MUDGATE_MAX_SOCKETS lowered from %d to %d to fit the file descriptor limit "
                "(%d, less %d for everything else); raise `ulimit -n` to hold more",
                self.capacity,
                usable,
                descriptor_limit,
                RESERVED_DESCRIPTORS,
            )
            self.capacity = usable

    def open(self, transport: Transport) -> bool:
        """Admit a new connection, waiting for its first request. False when the table is full
        of connections that are all busy: the caller closes the newcomer at once."""
        if len(self._kinds) >= self.capacity:
            if not self._waiting:
                self._events[SocketEvent.REFUSED] += 1
                return False
            oldest = next(iter(self._waiting))
            self.close(oldest)
            self._events[SocketEvent.EVICTED] += 1
            oldest.abort()
        self._kinds[transport] = SocketKind.WAITING
        self._waiting[transport] = None
        self._counts[SocketKind.WAITING] += 1
        return True

    def mark(self, transport: Transport, kind: SocketKind) -> None:
        """Record what ``transport`` is doing now; a connection that waits again goes to the
        back of the eviction order."""
        old = self._kinds.get(transport)
        if old is None:
            return  # evicted meanwhile
        if old is SocketKind.WAITING:
            del self._waiting[transport]
        if kind is SocketKind.WAITING:
            self._waiting[transport] = None
        self._kinds[transport] = kind
        self._counts[old] -= 1
        self._counts[kind] += 1

    def close(self, transport: Transport) -> None:
        """Forget ``transport``; idempotent."""
        kind = self._kinds.pop(transport, None)
        if kind is None:
            return
        if kind is SocketKind.WAITING:
            del self._waiting[transport]
        self._counts[kind] -= 1

    def count(self, event: SocketEvent) -> None:
        self._events[event] += 1

    def stats(self) -> SocketStats:
        return SocketStats(
            open=len(self._kinds),
            capacity=self.capacity,
            by_kind={kind.value: self._counts[kind] for kind in SocketKind},
            events={event.value: self._events[event] for event in SocketEvent},
        )
