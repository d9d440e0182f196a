"""One client connection: its bounded outbox, the writer that drains it, and how it closes.

A connection opens held: what it is sent waits in its outbox (under the outbox caps) until the
hub welcomes it (``welcome``), so the first event a client reads is always the welcome. ``send``
never awaits the client, so a broadcast costs the same whether a recipient reads
fast, slowly or not at all. A message for a connection with nothing queued goes to its
transport at once when the transport can take it without growing (``write_now``); otherwise
it waits in the outbox for the writer task, which exists only while something waits. A
recipient whose outbox fills up (in messages or bytes), or whose single write blocks past
``write_timeout``, is closed with 4008. The connection writes through its transport
(transports.py: WebSocket, SSE), which is the only part that knows how the client is reached.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .bounded import LeakyBucket
from .protocol import CloseCode, Outgoing
from .settings import Settings
from .transports import Transport

__all__ = ["Connection", "ConnectionLimits", "ConnectionState"]

logger = logging.getLogger("mudgate.connection")

_ids = itertools.count(1)


class ConnectionState(enum.Enum):
    OPENING = "opening"  # not welcomed yet: what it is sent is held, nothing is written
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection limits, built once from Settings and shared by every connection."""

    outbox_max_messages: int
    outbox_max_bytes: int
    write_timeout: float
    bad_frame_limit: int
    bad_frame_window: float
    # The watchdog's round: a writer found waiting for more at a round ends, so an idle
    # connection soon holds no task, while a busy one keeps one task and no timer per message.
    writer_linger_seconds: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            outbox_max_messages=settings.outbox_max_messages,
            outbox_max_bytes=settings.outbox_max_bytes,
            write_timeout=settings.write_timeout,
            bad_frame_limit=settings.bad_frame_limit,
            bad_frame_window=settings.bad_frame_window,
        )


class _Writer:
    """The task draining a connection's queue, which exists only while something waits (and
    a moment after): the task, the watchdog timer that watches it, when its current write
    started, and, while it lingers for more, the future that wakes it."""

    __slots__ = ("started", "task", "wakeup", "watchdog")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.watchdog: asyncio.TimerHandle | None = None
        self.started: float | None = None  # the write under way, if one is
        self.wakeup: asyncio.Future[bool] | None = None  # True: more to write; False: end

    def wake(self, more: bool) -> None:
        """End a linger: with more to write, or to stop."""
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(more)

    def unwatch(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None


class Connection:
    """A player's connection as the hub sees it, whatever the transport.

    The endpoint's ``handler`` task creates it (opening), runs its receive loop inside
    ``Hub.session``, which welcomes it (open) and always ends in ``Hub.disconnect``; ``abort``
    cancels that task when the client cannot even be told it is being closed.
    """

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_backlog",
        "_bad_frames",
        "_clock",
        "_closer",
        "_floors",
        "_handler",
        "_limits",
        "_outbox",
        "_outbox_bytes",
        "_writer",
        "close_code",
        "close_reason",
        "connected_at",
        "id",
        "last_received",
        "peer_close",
        "player_id",
        "remote",
        "state",
        "transport",
    )

    def __init__(
        self,
        player_id: str,
        remote: str,
        limits: ConnectionLimits,
        *,
        transport: Transport,
        handler: asyncio.Task[Any] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.id = f"{transport.name}-{next(_ids)}"
        self.player_id = player_id
        self.remote = remote
        self.state = ConnectionState.OPENING
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        # How the client ended it (a WebSocket's close code and reason), set by the transport.
        self.peer_close: tuple[int, str] | None = None
        self.connected_at = self.last_received = clock()
        self._clock = clock
        self._limits = limits
        # Allocated on the first send and dropped once drained: an idle connection holds none.
        self._outbox: deque[Outgoing] | None = None
        self._outbox_bytes = 0
        # The welcome and what waited for the player while away: written before the outbox.
        self._backlog: deque[Outgoing] | None = None
        self._writer: _Writer | None = None
        self._closer: asyncio.Task[None] | None = None
        self._handler = handler  # what abort() cancels (None: nothing to cancel)
        self._aborted = False
        self._bad_frames: LeakyBucket | None = None  # made on the first bad frame
        # After a resume: for each topic resumed, its epoch and the offset the client was
        # given up to; a numbered event of the topic at or below it is not sent again.
        self._floors: dict[str, tuple[str, int]] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} player={self.player_id} {self.state.value}>"

    @property
    def outbox_bytes(self) -> int:
        return self._outbox_bytes

    @property
    def outbox_messages(self) -> int:
        return len(self._outbox) if self._outbox is not None else 0

    @property
    def aborted(self) -> bool:
        """Whether ``abort`` cancelled the handler task (the handler then ends quietly)."""
        return self._aborted

    # Sending

    def send(self, message: Outgoing) -> bool:
        """Queue ``message`` without waiting; False if the connection is closing or now closed.

        Until the connection is welcomed the message is held, in order, under the same caps.
        A full outbox means the client is not keeping up: it is closed with 4008 rather than
        allowed to make the server's memory grow.
        """
        floors = self._floors
        if floors is not None and message.offset:
            floor = floors.get(message.topic)  # type: ignore[arg-type]
            if floor is not None and floor[0] == message.epoch and message.offset <= floor[1]:
                return True  # the client has it: a resume gave it, or told it lost
        state = self.state
        if state is ConnectionState.OPEN:
            if not self._outbox and not self._backlog and self.transport.write_now(message):
                return True  # the fast path: nothing queued ahead, and the transport had room
        elif state is not ConnectionState.OPENING:
            return False
        limits = self._limits
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        if (
            len(outbox) >= limits.outbox_max_messages
            or self._outbox_bytes + len(message) > limits.outbox_max_bytes
        ):
            self.close(CloseCode.SLOW_CONSUMER, "outbox full")
            return False
        outbox.append(message)
        self._outbox_bytes += len(message)
        if state is ConnectionState.OPEN:
            self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        # An idle connection holds no writer task; one starts when there is something to write
        # and lingers a moment after, so a busy connection does not start one per message.
        if self._writer is None:
            loop = asyncio.get_running_loop()
            writer = self._writer = _Writer(loop.create_task(self._drain()))
            writer.watchdog = loop.call_later(
                self._watch_interval(self._limits.write_timeout), self._watch
            )
        else:
            self._writer.wake(True)

    def forget_held(self, topic: str, up_to: int) -> int:
        """Drop what the connection holds (still opening) of ``topic`` numbered ``up_to`` or
        before: a resume's replay has them (they arrived live while the history was read).
        The number dropped."""
        outbox = self._outbox
        if self.state is not ConnectionState.OPENING or not outbox:
            return 0
        kept: deque[Outgoing] = deque()
        for message in outbox:
            if message.topic == topic and 0 < message.offset <= up_to:
                self._outbox_bytes -= len(message)
            else:
                kept.append(message)
        dropped = len(outbox) - len(kept)
        self._outbox = kept
        return dropped

    def resumed(self, topic: str, epoch: str, offset: int) -> None:
        """A resume gave the client ``topic`` up to ``offset`` in ``epoch`` (or told it that
        far lost): a numbered event of it at or below that, arriving late, is not sent."""
        if self._floors is None:
            self._floors = {}
        self._floors[topic] = (epoch, offset)

    def first_held(self, topic: str, epoch: str) -> int:
        """The offset of the first numbered event of ``topic`` in ``epoch`` the connection
        holds (still opening), or 0."""
        for message in self._outbox or ():
            if message.topic == topic and message.epoch == epoch and message.offset:
                return message.offset
        return 0

    def room_left(self) -> tuple[int, int]:
        """How many more messages, and bytes, the outbox takes before the connection is a
        slow consumer."""
        limits = self._limits
        return (
            limits.outbox_max_messages - self.outbox_messages,
            limits.outbox_max_bytes - self._outbox_bytes,
        )

    def hold_first(self, messages: list[Outgoing]) -> None:
        """Hold ``messages`` (a resume's replay) ahead of what the connection holds already,
        in order, counted in its outbox; the caller checked they fit (``room_left``)."""
        if self.state is not ConnectionState.OPENING or not messages:
            return
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        outbox.extendleft(reversed(messages))
        self._outbox_bytes += sum(len(message) for message in messages)

    def welcome(self, first: Iterable[Outgoing]) -> None:
        """Start writing: ``first`` (the hub's welcome, then what waited for the player while
        away), then what the connection was sent while opening, then the rest, in order.

        ``first`` was already held (and capped) by the hub's pending messages; it does not
        count against the outbox caps, so a long backlog never makes a slow consumer by itself
        (a client that does not read it still hits write_timeout). Raises RuntimeError unless
        the connection is opening: it is welcomed once, and a closed one is not.
        """
        if self.state is not ConnectionState.OPENING:
            raise RuntimeError(f"{self.id} is {self.state.value}: only an opening one is welcomed")
        self.state = ConnectionState.OPEN
        self._backlog = deque(first) or None
        if self._backlog or self._outbox:
            self._wake_writer()

    def _next(self) -> tuple[deque[Outgoing], Outgoing] | None:
        # The backlog first: it is only ever made by ``welcome``, ahead of all that was sent.
        for queue in (self._backlog, self._outbox):
            if queue:
                return queue, queue[0]
        return None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._writer
        assert writer is not None
        try:
            while True:
                while (next_message := self._next()) is not None:
                    queue, message = next_message
                    writer.started = loop.time()
                    try:
                        await self.transport.write(message)
                    except (OSError, RuntimeError) as error:
                        # The client is gone; its receive loop sees the disconnect and ends.
                        logger.debug("write to %s failed: %r", self.id, error)
                        self._clear_outbox()
                        return
                    finally:
                        writer.started = None
                    queue.popleft()
                    if queue is self._outbox:
                        self._outbox_bytes -= len(message)
                # A send that came just as the watchdog ended the linger found the wakeup
                # already resolved: look once more before leaving.
                if not await self._linger(writer, loop) and self._next() is None:
                    return
        finally:
            if self._writer is writer:
                self._writer = None
            writer.unwatch()
            if not self._outbox:
                self._outbox = None
            if not self._backlog:
                self._backlog = None

    async def _linger(self, writer: _Writer, loop: asyncio.AbstractEventLoop) -> bool:
        """Wait for more to write; True if something came (``send`` wakes us), False when the
        watchdog finds the writer still idle at its next round and ends it."""
        if self._limits.writer_linger_seconds <= 0 or self.state is not ConnectionState.OPEN:
            return False
        wakeup = writer.wakeup = loop.create_future()
        try:
            woken: bool = await wakeup
        finally:
            writer.wakeup = None
        return woken

    def _watch(self) -> None:
        """A round of the writer's watchdog (one timer per writer, not one per message)."""
        writer = self._writer
        if writer is None or writer.task.done():
            return
        writer.watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._write_timed_out(writer, now):
            return
        # Lingering through a whole round: the writer ends (its finally cancels the next
        # round, which still watches it should a message have come just now).
        writer.wake(False)
        timeout = self._limits.write_timeout
        delay = timeout if writer.started is None else writer.started + timeout - now
        writer.watchdog = loop.call_later(self._watch_interval(delay), self._watch)

    def _write_timed_out(self, writer: _Writer, now: float) -> bool:
        """Close with 4008 a client whose write has been blocked past write_timeout (it
        stopped reading); whether it was."""
        started = writer.started
        if started is None or now - started < self._limits.write_timeout:
            return False
        self.close(CloseCode.SLOW_CONSUMER, "write timed out")
        return True

    def _watch_interval(self, until_timeout: float) -> float:
        # The watchdog also ends a writer idle for a round, so it looks every linger period.
        linger = self._limits.writer_linger_seconds
        return min(until_timeout, linger) if linger > 0 else until_timeout

    def _clear_outbox(self) -> None:
        self._outbox = self._backlog = None
        self._outbox_bytes = 0

    # Receiving

    def received(self) -> None:
        """Note traffic from the client (for idle_timeout)."""
        self.last_received = self._clock()

    def bad_frame(self) -> bool:
        """Count a bad frame; False once the client has sent more than the limit allows.

        A leaky bucket: it drains at bad_frame_limit per bad_frame_window.
        """
        if self._bad_frames is None:
            self._bad_frames = LeakyBucket()
        limits = self._limits
        return self._bad_frames.hit(self._clock(), limits.bad_frame_limit, limits.bad_frame_window)

    # Closing

    def close(self, code: CloseCode, reason: str | None = None) -> None:
        """Start closing with ``code``; idempotent. What is queued is still written first,
        except for a slow consumer, whose outbox is dropped, and for a connection not yet
        welcomed, which is sent nothing but the close."""
        opening = self.state is ConnectionState.OPENING
        if not opening and self.state is not ConnectionState.OPEN:
            return
        self.state = ConnectionState.CLOSING
        self.close_code = code
        self.close_reason = reason or code.reason
        if self._writer is not None:
            self._writer.wake(False)  # a lingering writer ends now
        if opening or code is CloseCode.SLOW_CONSUMER:
            # Never welcomed: nothing but the close is written.
            self._clear_outbox()
            self._stop_writer()
        self._closer = asyncio.get_running_loop().create_task(self._close_transport())

    async def _close_transport(self) -> None:
        assert self.close_code is not None
        try:
            async with asyncio.timeout(self._limits.write_timeout):
                if self._writer is not None:
                    # Flush what is queued first (wait() never raises, even if it is cancelled).
                    await asyncio.wait((self._writer.task,))
                await self.transport.write_close(self.close_code, self.close_reason)
        except (TimeoutError, OSError, RuntimeError) as error:
            # The client cannot even be told: end its handler, which disconnects it.
            logger.debug("closing %s failed (%r); aborting", self.id, error)
            self.abort()

    def abort(self) -> None:
        """Cancel the handler task; it ends without writing anything more."""
        handler = self._handler
        if handler is not None and not handler.done() and not self._aborted:
            self._aborted = True
            handler.cancel(f"mudgate: aborting {self.id}")

    def release(self) -> None:
        """Drop what is queued and stop writing; called once by ``Hub.disconnect``.

        A close already under way finishes (bounded by write_timeout) so the client still
        learns why it was closed.
        """
        self.state = ConnectionState.CLOSED
        self._clear_outbox()
        self._stop_writer()
        self.transport.release()

    def _stop_writer(self) -> None:
        """Cancel the writer and its watchdog. Not left to the writer's ``finally``: a task
        cancelled before its first step never runs it."""
        writer = self._writer
        if writer is None or writer.task is asyncio.current_task():
            return
        self._writer = None
        writer.task.cancel()
        writer.unwatch()
