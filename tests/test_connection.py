"""A connection's bounded outbox, its writer, and how it closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mudgate.connection import Connection, ConnectionLimits, ConnectionState
from mudgate.protocol import CloseCode, Outgoing

from .conftest import FakeClock, RecordingConnection, RecordingTransport, settle


def limits(**overrides: float) -> ConnectionLimits:
    values: dict[str, float] = {
        "outbox_max_messages": 3,
        "outbox_max_bytes": 100,
        "write_timeout": 0.05,
        "bad_frame_limit": 2,
        "bad_frame_window": 10.0,
        "writer_linger_seconds": 0.0,
    }
    values.update(overrides)
    return ConnectionLimits(**values)  # type: ignore[arg-type]


def message(size: int = 10) -> Outgoing:
    return Outgoing("say", b"x" * size)


def opened(connection_limits: ConnectionLimits, **options: Any) -> RecordingConnection:
    """A connection as the hub leaves it once welcomed (here with nothing to write first)."""
    conn = RecordingConnection("alice", "127.0.0.1", connection_limits, **options)
    conn.welcome([])
    return conn


async def test_messages_are_written_in_order() -> None:
    conn = opened(limits())
    sent = [message(), message(), message()]
    assert all(conn.send(m) for m in sent)
    await settle()
    assert conn.written == sent
    assert conn.outbox_bytes == conn.outbox_messages == 0


async def test_a_busy_connection_keeps_one_writer_task_and_an_idle_one_none() -> None:
    conn = opened(limits(writer_linger_seconds=0.05))
    conn.send(message())
    assert conn._writer is not None
    writer = conn._writer.task
    await settle()
    conn.send(message())  # while the writer lingers: no new task
    assert conn._writer is not None
    assert conn._writer.task is writer
    await settle()
    assert len(conn.written) == 2
    await asyncio.wait((writer,), timeout=2)  # nothing more: it ends after the linger
    assert conn._writer is None


async def test_a_message_sent_as_the_linger_ends_is_still_written() -> None:
    conn = opened(limits(writer_linger_seconds=60))
    conn.send(message())
    await settle()
    assert conn._writer is not None
    assert conn._writer.wakeup is not None
    conn._writer.wakeup.set_result(False)  # the watchdog ends the linger...
    conn.send(message())  # ...just as another message arrives
    await settle()
    assert len(conn.written) == 2


async def test_closing_ends_a_lingering_writer_at_once() -> None:
    conn = opened(limits(writer_linger_seconds=60))
    conn.send(message())
    await settle()
    conn.close(CloseCode.RECYCLED)
    await settle()
    assert conn.closed_with == (CloseCode.RECYCLED, "recycled")
    assert conn._writer is None


async def test_an_idle_connection_holds_no_writer_task() -> None:
    conn = opened(limits())
    assert conn._writer is None
    conn.send(message())
    assert conn._writer is not None
    await settle()
    assert conn._writer is None


async def test_a_full_outbox_closes_a_slow_consumer_with_4008() -> None:
    conn = opened(limits(write_timeout=5))
    conn.block = asyncio.Event()  # the client stops reading
    assert all(conn.send(message()) for _ in range(3))
    assert not conn.send(message())
    assert conn.state is ConnectionState.CLOSING
    assert conn.close_code is CloseCode.SLOW_CONSUMER
    assert conn.outbox_bytes == 0
    assert not conn.send(message())  # nothing more is queued while closing
    await settle()
    assert conn.closed_with == (CloseCode.SLOW_CONSUMER, "outbox full")


async def test_the_byte_cap_counts_too() -> None:
    conn = opened(limits(write_timeout=5))
    conn.block = asyncio.Event()
    assert conn.send(message(60))
    assert not conn.send(message(60))
    assert conn.close_code is CloseCode.SLOW_CONSUMER


async def test_a_write_blocked_past_write_timeout_is_a_slow_consumer() -> None:
    conn = opened(limits(write_timeout=0.01))
    conn.block = asyncio.Event()
    conn.send(message())
    async with asyncio.timeout(2):
        while conn.closed_with is None:
            await asyncio.sleep(0.01)
    assert conn.closed_with == (CloseCode.SLOW_CONSUMER, "write timed out")


async def test_close_flushes_what_is_queued_first() -> None:
    conn = opened(limits())
    conn.send(message())
    conn.close(CloseCode.RECYCLED)
    conn.close(CloseCode.IDLE)  # idempotent: the first reason stands
    await settle()
    assert len(conn.written) == 1
    assert conn.closed_with == (CloseCode.RECYCLED, "recycled")


class StalledTransport(RecordingTransport):
    """A client that never reads: every write, the close included, blocks."""

    async def write(self, message: Outgoing) -> None:
        await asyncio.Event().wait()

    async def write_close(self, code: CloseCode, reason: str) -> None:
        await asyncio.Event().wait()


async def test_a_close_that_cannot_be_written_aborts_the_handler() -> None:
    async def handler() -> None:
        conn = Connection(
            "alice",
            "127.0.0.1",
            limits(write_timeout=0.01),
            transport=StalledTransport(),
            handler=asyncio.current_task(),
        )
        conn.close(CloseCode.RECYCLED)
        await asyncio.sleep(10)  # the receive loop, which the abort ends

    task = asyncio.create_task(handler())
    await asyncio.wait((task,), timeout=2)
    assert task.cancelled()


async def test_bad_frames_drain_like_a_leaky_bucket(clock: FakeClock) -> None:
    conn = opened(limits(), clock=clock)
    assert conn.bad_frame()
    assert conn.bad_frame()
    assert not conn.bad_frame()
    clock.advance(10.0)  # the bucket drains bad_frame_limit per window
    assert conn.bad_frame()


async def test_closed_drops_the_outbox_and_stops_the_writer() -> None:
    conn = opened(limits(write_timeout=5))
    conn.block = asyncio.Event()
    conn.send(message())
    conn.send(message())
    await settle()
    conn.release()
    assert conn.state is ConnectionState.CLOSED
    assert conn.outbox_messages == 0
    await settle()
    assert conn._writer is None
    assert "closed" in repr(conn)


async def test_a_failing_transport_empties_the_outbox() -> None:
    class Broken(RecordingTransport):
        async def write(self, message: Outgoing) -> None:
            raise OSError("connection reset")

    conn = opened(limits(), transport=Broken())
    conn.send(message())
    conn.send(message())
    assert conn.outbox_messages == 2
    await settle()
    assert conn.outbox_messages == 0
    assert conn.written == []
    assert conn._writer is None


class FastTransport(RecordingTransport):
    """A transport with a fast path that has room only while ``room`` is True."""

    def __init__(self) -> None:
        super().__init__()
        self.room = True
        self.written_now: list[Outgoing] = []

    def write_now(self, message: Outgoing) -> bool:
        if self.room:
            self.written_now.append(message)
        return self.room


def fast_connection() -> tuple[RecordingConnection, FastTransport]:
    transport = FastTransport()
    conn = opened(limits(), transport=transport)
    return conn, transport


async def test_with_room_on_the_transport_a_message_is_written_at_once_without_a_task() -> None:
    conn, transport = fast_connection()
    sent = [message(), message()]
    assert all(conn.send(m) for m in sent)
    assert transport.written_now == sent
    assert conn.outbox_messages == 0
    assert conn._writer is None


async def test_once_anything_is_queued_what_follows_waits_behind_it() -> None:
    conn, transport = fast_connection()
    transport.room = False
    first, second = message(), message()
    assert conn.send(first)  # no room: queued for the writer
    transport.room = True
    assert conn.send(second)  # room again, but `first` is ahead of it
    assert transport.written_now == []
    await settle()
    assert conn.written == [first, second]
    third = message()
    assert conn.send(third)  # the queue is empty again: straight to the transport
    assert transport.written_now == [third]


async def test_the_welcome_and_backlog_are_written_first_and_new_messages_wait_behind_them() -> (
    None
):
    transport = FastTransport()
    conn = RecordingConnection("alice", "127.0.0.1", limits(), transport=transport)
    first = [message(), message(), message(), message()]  # the welcome, then a long backlog
    conn.welcome(first)
    later = message()
    assert conn.send(later)
    await settle()
    assert transport.written_now == []
    assert conn.written == [*first, later]
    assert conn.outbox_messages == 0  # the backlog never counted against the outbox's caps


async def test_an_opening_connection_holds_what_it_is_sent_until_welcomed() -> None:
    transport = FastTransport()
    conn = RecordingConnection("alice", "127.0.0.1", limits(), transport=transport)
    assert conn.state is ConnectionState.OPENING
    held = [message(), message()]
    assert all(conn.send(m) for m in held)
    await settle()
    assert conn.written == transport.written_now == []  # not even the fast path
    assert conn._writer is None
    assert (conn.outbox_messages, conn.outbox_bytes) == (2, 20)
    welcome, backlog, later = message(), message(), message()
    conn.welcome([welcome, backlog])
    assert conn.send(later)
    await settle()
    assert conn.state is ConnectionState.OPEN
    assert conn.written == [welcome, backlog, *held, later]


async def test_what_an_opening_connection_holds_is_capped_like_its_outbox() -> None:
    conn = RecordingConnection("alice", "127.0.0.1", limits(outbox_max_messages=3))
    assert all(conn.send(message()) for _ in range(3))
    assert not conn.send(message())
    await settle()
    assert conn.closed_with == (CloseCode.SLOW_CONSUMER, "outbox full")
    assert conn.written == []
    assert conn.outbox_messages == 0


async def test_a_connection_closed_before_its_welcome_is_sent_nothing_but_the_close() -> None:
    conn = RecordingConnection("alice", "127.0.0.1", limits())
    conn.send(message())
    conn.close(CloseCode.REPLACED)
    await settle()
    assert conn.written == []
    assert conn.closed_with == (CloseCode.REPLACED, "replaced")
    with pytest.raises(RuntimeError, match="closing: only an opening one is welcomed"):
        conn.welcome([message()])


async def test_a_connection_is_welcomed_once() -> None:
    conn = opened(limits())
    with pytest.raises(RuntimeError, match="open: only an opening one is welcomed"):
        conn.welcome([message()])
