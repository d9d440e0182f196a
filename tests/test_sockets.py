"""The socket table: every TCP connection counted, the longest waiter evicted at the cap."""

from __future__ import annotations

import pytest

from mudgate.sockets import RESERVED_DESCRIPTORS, SocketEvent, SocketKind, SocketTable


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
    assert stats.by_kind == {"waiting": 1, "http": 0, "websocket": 1}
    table.close(first)
    table.close(first)  # idempotent
    assert table.stats().by_kind == {"waiting": 1, "http": 0, "websocket": 0}


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
    assert table.stats().by_kind == {"waiting": 1, "http": 0, "websocket": 0}


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
