"""A WebSocket's liveness, both ways: the server's pings with their deadline, and the limit on
the client's control frames (websocket.py owns one of each per connection)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from ..bounded import leak

__all__ = ["ControlFrameLimit", "Heartbeat"]


class Heartbeat:
    """Pings the client every ``interval`` seconds; the pong must come within ``timeout``,
    or ``timed_out`` is called. ``ping`` sends a ping's payload, False if it cannot (the
    connection is no longer open): then nothing is awaited."""

    __slots__ = ("_handle", "_interval", "_loop", "_payload", "_ping", "_timed_out", "_timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        timeout: float,
        *,
        ping: Callable[[bytes], bool],
        timed_out: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._timeout = timeout
        self._ping = ping
        self._timed_out = timed_out
        self._handle: asyncio.TimerHandle | None = None
        self._payload: bytes | None = None  # of the ping awaiting its pong

    def start(self) -> None:
        """Ping ``interval`` seconds from now."""
        self.stop()
        self._handle = self._loop.call_later(self._interval, self._send)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def answered(self, payload: bytes) -> bool:
        """Whether ``payload`` is the pong to the ping awaiting one (the next is scheduled)."""
        if self._payload is None or payload != self._payload:
            return False
        self._payload = None
        self.start()
        return True

    def _send(self) -> None:
        self._handle = None
        payload = os.urandom(4)
        if self._ping(payload):
            self._payload = payload
            self._handle = self._loop.call_later(self._timeout, self._expired)

    def _expired(self) -> None:
        self._handle = None
        self._timed_out()


class ControlFrameLimit:
    """A leaky bucket of the client's control frames (pings, unsolicited pongs): ``limit`` per
    ``window`` seconds. Two floats per connection, whatever the client sends."""

    __slots__ = ("_at", "_level", "_limit", "_window")

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._level = 0.0
        self._at = 0.0

    def exceeded(self, now: float) -> bool:
        """Count one more control frame at ``now``: whether they come too fast."""
        self._level = leak(self._level, now - self._at, self._limit, self._window)
        self._at = now
        return self._level > self._limit
