"""One transport's flow control, whichever protocol speaks on it (HTTP, then a WebSocket).

Reading stops while any reason to stop holds: the transport has more than
``write_buffer_bytes`` waiting for a client that does not read, or the app has not taken
what was read. Writers wait for the buffer to drain. One timer carries the connection's
current deadline. Closing is bounded: the end of the stream is sent after what is written,
what the client still sends is read and dropped (so the kernel does not reset the
connection and lose the last answer), and after ``close_timeout`` or
``LINGER_LIMIT_BYTES`` the connection is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .sockets import SocketKind, SocketTable

__all__ = ["APP", "BODY", "LINGER_LIMIT_BYTES", "NEXT_REQUEST", "WRITE", "Flow"]

# Why reading is paused; it resumes when no reason is left.
WRITE = 1  # the transport holds more than write_buffer_bytes
APP = 2  # the app has not taken the last message (or answered the handshake)
BODY = 4  # the app has not taken the request body received so far
NEXT_REQUEST = 8  # a pipelined request waits for the current response

# What a closing connection may still send (the rest of a refused body, say) before it is
# dropped.
LINGER_LIMIT_BYTES = 1024 * 1024


class Flow:
    """Read pausing, write draining, a deadline and a bounded close for one transport."""

    __slots__ = (
        "_close_timeout",
        "_drain_waiter",
        "_lingered",
        "_loop",
        "_paused",
        "_sockets",
        "_timer",
        "closing",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        sockets: SocketTable,
        loop: asyncio.AbstractEventLoop,
        close_timeout: float,
    ) -> None:
        self.transport = transport
        self._sockets = sockets
        self._loop = loop
        self._close_timeout = close_timeout
        self._paused = 0
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lingered = 0
        self.closing = False

    # Reading

    def pause(self, reason: int) -> None:
        if not self._paused:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.transport.is_closing():
                self.transport.resume_reading()

    # Writing

    @property
    def write_paused(self) -> bool:
        return bool(self._paused & WRITE)

    def pause_writing(self) -> None:
        self.pause(WRITE)

    def resume_writing(self) -> None:
        self.resume(WRITE)
        self._wake_writers()

    async def drain(self) -> None:
        """Wait until the transport is below its high-water mark, or gone."""
        while self.write_paused and not self.transport.is_closing():
            if self._drain_waiter is None:
                self._drain_waiter = self._loop.create_future()
            await asyncio.shield(self._drain_waiter)

    def _wake_writers(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if data and not self.closing and not self.transport.is_closing():
            self.transport.write(data)

    # The deadline

    def arm(self, delay: float, callback: Callable[[], object]) -> None:
        """Call ``callback`` in ``delay`` seconds, in place of any earlier deadline."""
        self.cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Closing

    def close(self, *, linger: bool = True) -> None:
        """End the connection once what is written has gone, within close_timeout.

        With ``linger``, for a client that should read an answer: what it still sends is
        read and dropped until it closes too, so that its unread bytes do not make the kernel
        reset the connection and lose the answer.
        """
        if self.closing or self.transport.is_closing():
            return
        self.closing = True
        transport = self.transport
        # A closing connection is the first to go if the table needs room.
        self._sockets.mark(transport, SocketKind.WAITING)
        self.arm(self._close_timeout, transport.abort)
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._paused = 0
            transport.resume_reading()
        else:
            transport.close()

    def linger(self, data: bytes) -> None:
        """What a closing connection received: dropped, up to LINGER_LIMIT_BYTES."""
        self._lingered += len(data)
        if self._lingered > LINGER_LIMIT_BYTES:
            self.transport.abort()

    def abort(self) -> None:
        self.transport.abort()

    def lost(self) -> None:
        """The connection is gone: forget it, wake whoever waits to write."""
        self.closing = True
        self.cancel_timer()
        self._sockets.close(self.transport)
        self._wake_writers()
