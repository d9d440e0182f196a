"""The socket table: every TCP connection counted, the longest waiter evicted at the cap."""

from __future__ import annotations

import pytest

from mudgate.server.sockets import RESERVED_DESCRIPTORS, SocketEvent, SocketKind, SocketTable


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_connections_are_counted_by_kind() -> None:
    table = SocketTable(10)
    first, second = FakeTransport(), FakeTransport()
    assert table.open(first)
    assert table.open(second)
    table.mark(first, SocketKind.WEBSOCKET)
    stats = table.stats()
    assert (stats.open, stats.capacity) == (2, 10)
    assert stats.by_kind == {"waiting": 1, "receiving": 0, "http": 0, "websocket": 1, "telnet": 0}
    table.close(first)
    table.close(first)  # idempotent
    assert table.stats().by_kind == {
        "waiting": 1,
        "receiving": 0,
        "http": 0,
        "websocket": 0,
        "telnet": 0,
    }


def test_at_the_cap_the_longest_waiter_is_evicted() -> None:
    table = SocketTable(2)
    oldest, busy, newcomer = FakeTransport(), FakeTransport(), FakeTransport()
    table.open(oldest)
    table.open(busy)
    table.mark(busy, SocketKind.HTTP)
    assert table.open(newcomer)
    assert oldest.aborted
    assert oldest not in table
    assert not busy.aborted
    assert table.stats().events["evicted"] == 1


def test_waiting_again_goes_to_the_back_of_the_line() -> None:
    table = SocketTable(2)
    first, second, third = FakeTransport(), FakeTransport(), FakeTransport()
    table.open(first)
    table.open(second)
    table.mark(first, SocketKind.HTTP)
    table.mark(first, SocketKind.WAITING)  # a keep-alive after its response
    table.open(third)
    assert second.aborted
    assert not first.aborted


def test_a_request_whose_body_is_still_arriving_is_evicted_like_a_waiter() -> None:
    table = SocketTable(3)
    slow_body, answering, waiting = FakeTransport(), FakeTransport(), FakeTransport()
    table.open(slow_body)
    table.mark(slow_body, SocketKind.RECEIVING)
    table.open(answering)
    table.mark(answering, SocketKind.HTTP)
    table.open(waiting)
    # The longest of the waiting and receiving ones goes first, whichever it is.
    assert table.open(FakeTransport())
    assert slow_body.aborted
    assert table.open(FakeTransport())
    assert waiting.aborted
    assert not answering.aborted
    assert table.stats().events["evicted"] == 2


def test_a_body_that_has_arrived_is_no_longer_evictable() -> None:
    table = SocketTable(1)
    request = FakeTransport()
    table.open(request)
    table.mark(request, SocketKind.RECEIVING)
    table.mark(request, SocketKind.HTTP)  # the whole body is in: it is being answered
    assert not table.open(FakeTransport())
    assert not request.aborted


def test_compressed_connections_are_capped_and_released_when_they_close() -> None:
    table = SocketTable(10, compressed_capacity=1)
    first, second = FakeTransport(), FakeTransport()
    table.open(first)
    table.open(second)
    assert table.may_compress()
    table.compress(first)
    assert not table.may_compress()
    assert (table.stats().compressed, table.stats().compressed_capacity) == (1, 1)
    table.close(first)
    assert table.may_compress()
    assert table.stats().compressed == 0


def test_a_connection_already_gone_is_not_counted_as_compressed() -> None:
    table = SocketTable(10, compressed_capacity=5)
    gone = FakeTransport()
    table.compress(gone)  # closed (or evicted) before its handshake was answered
    assert table.stats().compressed == 0


def test_a_table_of_busy_connections_refuses_the_newcomer() -> None:
    table = SocketTable(1)
    busy = FakeTransport()
    table.open(busy)
    table.mark(busy, SocketKind.WEBSOCKET)
    assert not table.open(FakeTransport())
    assert table.stats().events["refused"] == 1
    assert len(table) == 1


def test_marking_an_evicted_connection_does_nothing() -> None:
    table = SocketTable(1)
    gone, newcomer = FakeTransport(), FakeTransport()
    table.open(gone)
    table.open(newcomer)
    table.mark(gone, SocketKind.HTTP)
    assert table.stats().by_kind == {
        "waiting": 1,
        "receiving": 0,
        "http": 0,
        "websocket": 0,
        "telnet": 0,
    }


def test_the_capacity_fits_the_descriptor_limit() -> None:
    table = SocketTable(11000)
    table.fit(1024)
    assert table.capacity == 1024 - RESERVED_DESCRIPTORS
    table.fit(1_000_000)
    assert table.capacity == 1024 - RESERVED_DESCRIPTORS


def test_events_are_counted() -> None:
    table = SocketTable(1)
    table.count(SocketEvent.TIMED_OUT)
    assert table.stats().events["timed_out"] == 1


def test_a_table_holds_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SocketTable(0)
