"""Every TCP connection the process holds, whatever it carries, under one cap.

A WebSocket player, an SSE stream, a scrape of ``/metrics`` and a socket that connected and
never sent a byte all hold a file descriptor, kernel buffers and a protocol object. The
``SocketTable`` counts them by what they are doing and keeps their number under
``max_sockets``: when a new one arrives at the cap, the one that has waited longest for a
request (or its body) to arrive (a slow or silent client, or an idle keep-alive) is closed to
make room; a table full of requests being answered and players refuses the newcomer instead.
A healthy client sends its request within milliseconds, so it is never the oldest waiter for
long, and a flood of silent sockets or of endless bodies evicts itself.

mudgate's protocol classes (``mudgate.server``) are the only writers; monitoring reads
``stats()``.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Abortable", "SocketEvent", "SocketKind", "SocketStats", "SocketTable"]

logger = logging.getLogger("mudgate.sockets")

# Descriptors kept for everything that is not a client: the listening socket, Redis, webhooks,
# log files, /proc reads.
RESERVED_DESCRIPTORS = 64


class Abortable(Protocol):
    """What the table needs of a connection: a way to drop it at once."""

    def abort(self) -> None: ...


class SocketKind(enum.Enum):
    """What a TCP connection is doing."""

    WAITING = "waiting"
    """Waiting for a request: just connected, or idle between two requests. Evicted first."""
    RECEIVING = "receiving"
    """A request whose body is still arriving. Evicted like a waiting one, the longest first."""
    HTTP = "http"
    """A request being answered (an SSE stream is one long answer)."""
    WEBSOCKET = "websocket"
    """Upgraded to a WebSocket."""
    TELNET = "telnet"
    """A telnet player (one still logging in is WAITING, evicted like a silent request)."""


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
    FRAGMENT_FLOOD = "fragment_flood"
    """Sent a WebSocket message in more frames than max_message_fragments allows (1008)."""
    COMPRESSION_DECLINED = "compression_declined"
    """Asked for WebSocket compression past max_compressed_connections: served without."""


# What a new connection may push out when the table is full: nothing a player or a response
# in progress depends on.
EVICTABLE = frozenset({SocketKind.WAITING, SocketKind.RECEIVING})


@dataclass(frozen=True, slots=True)
class SocketStats:
    """The table as monitoring shows it."""

    open: int
    capacity: int
    by_kind: dict[str, int]
    events: dict[str, int]
    compressed: int
    compressed_capacity: int


class SocketTable:
    """Open TCP connections by kind, capped at ``capacity``.

    Connections are identified by their transport. ``open`` admits one (evicting the longest
    waiter if it must), ``mark`` records what it is doing now, ``close`` forgets it; each is
    O(1).
    """

    def __init__(self, capacity: int, compressed_capacity: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.compressed_capacity = compressed_capacity
        # The WebSockets that negotiated compression (zlib state on top of everything else).
        self._compressed: set[Abortable] = set()
        self._kinds: dict[Abortable, SocketKind] = {}
        # The waiting and receiving ones, in the order they started to: the first is evicted
        # first.
        self._evictable: dict[Abortable, None] = {}
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

    def open(self, transport: Abortable) -> bool:
        """Admit a new connection, waiting for its first request. False when the table is full
        of connections that are all busy: the caller closes the newcomer at once."""
        if len(self._kinds) >= self.capacity:
            if not self._evictable:
                self._events[SocketEvent.REFUSED] += 1
                return False
            oldest = next(iter(self._evictable))
            self.close(oldest)
            self._events[SocketEvent.EVICTED] += 1
            oldest.abort()
        self._kinds[transport] = SocketKind.WAITING
        self._evictable[transport] = None
        self._counts[SocketKind.WAITING] += 1
        return True

    def mark(self, transport: Abortable, kind: SocketKind) -> None:
        """Record what ``transport`` is doing now; a connection that waits (or receives)
        again goes to the back of the eviction order."""
        old = self._kinds.get(transport)
        if old is None:
            return  # evicted meanwhile
        if old in EVICTABLE:
            del self._evictable[transport]
        if kind in EVICTABLE:
            self._evictable[transport] = None
        self._kinds[transport] = kind
        self._counts[old] -= 1
        self._counts[kind] += 1

    def may_compress(self) -> bool:
        """Whether one more connection may be compressed (below ``compressed_capacity``)."""
        return len(self._compressed) < self.compressed_capacity

    def compress(self, transport: Abortable) -> None:
        """Count ``transport`` as compressed until it closes (the caller checked
        ``may_compress``)."""
        if transport in self._kinds:
            self._compressed.add(transport)

    def uncompress(self, transport: Abortable) -> None:
        """``transport`` will not be compressed after all (its handshake was refused)."""
        self._compressed.discard(transport)

    def close(self, transport: Abortable) -> None:
        """Forget ``transport``; idempotent."""
        self._compressed.discard(transport)
        kind = self._kinds.pop(transport, None)
        if kind is None:
            return
        if kind in EVICTABLE:
            del self._evictable[transport]
        self._counts[kind] -= 1

    def count(self, event: SocketEvent) -> None:
        self._events[event] += 1

    def stats(self) -> SocketStats:
        return SocketStats(
            open=len(self._kinds),
            capacity=self.capacity,
            by_kind={kind.value: self._counts[kind] for kind in SocketKind},
            events={event.value: self._events[event] for event in SocketEvent},
            compressed=len(self._compressed),
            compressed_capacity=self.compressed_capacity,
        )
