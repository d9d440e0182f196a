"""A WebSocket's liveness, both ways: the server's pings with their deadline, and the limit on
the client's control frames (websocket.py owns one of each per connection)."""

from __future__ import annotations

import asyncio
import os
from typing import Protocol

__all__ = ["Heartbeat", "Pinged"]


class Pinged(Protocol):
    """The connection a Heartbeat keeps alive."""

    def send_ping(self, payload: bytes) -> bool:
        """Send a ping; False if the connection can no longer (then nothing is awaited)."""

    def ping_timed_out(self) -> None:
        """No pong came within the timeout."""


class Heartbeat:
    """Pings ``connection`` every ``interval`` seconds; the pong must come within
    ``timeout``, or the connection hears of it. Holds the connection itself, not bound
    methods of it: one of these lives as long as every WebSocket."""

    __slots__ = ("_connection", "_handle", "_interval", "_loop", "_payload", "_timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        timeout: float,
        connection: Pinged,
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._timeout = timeout
        self._connection = connection
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
        if self._connection.send_ping(payload):
            self._payload = payload
            self._handle = self._loop.call_later(self._timeout, self._expired)

    def _expired(self) -> None:
        self._handle = None
        self._connection.ping_timed_out()
