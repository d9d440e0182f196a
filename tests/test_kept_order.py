"""Direct deliveries waiting behind a node's kept events (backplane/kept_order.py): in the
order they were asked for, each once the events before it are settled, and bounded by a cap
and a timeout. Deliveries are appends to a list; time is a clock the test moves by hand,
except where the timer itself is shown."""

from __future__ import annotations

import asyncio

from mudgate.backplane.kept_order import KeptOrder

from .conftest import FakeClock


def order(clock: FakeClock, capacity: int = 10, timeout_seconds: float = 2.0) -> KeptOrder:
    return KeptOrder(capacity, timeout_seconds, clock)


async def test_deliveries_wait_for_the_events_before_them_and_go_in_order() -> None:
    made: list[str] = []
    waiting = order(FakeClock())
    waiting.wait(2, lambda: made.append("narrate"))
    waiting.wait(3, lambda: made.append("reply"))
    waiting.confirmed(1)
    assert made == []
    waiting.confirmed(2)
    assert made == ["narrate"]
    waiting.confirmed(3)
    assert (made, len(waiting), waiting.unordered) == (["narrate", "reply"], 0, 0)


async def test_a_delivery_whose_events_are_back_still_waits_behind_earlier_ones() -> None:
    made: list[str] = []
    waiting = order(FakeClock())
    waiting.wait(2, lambda: made.append("first"))
    waiting.confirmed(1)
    waiting.wait(1, lambda: made.append("second"))
    assert made == []
    waiting.confirmed(2)
    assert made == ["first", "second"]


async def test_with_nothing_waiting_and_its_events_back_a_delivery_is_made_at_once() -> None:
    made: list[str] = []
    waiting = order(FakeClock())
    waiting.confirmed(4)
    waiting.wait(4, lambda: made.append("reply"))
    assert (made, len(waiting)) == (["reply"], 0)


async def test_past_its_capacity_a_delivery_is_made_at_once_and_counted() -> None:
    made: list[str] = []
    waiting = order(FakeClock(), capacity=2)
    for name in ("a", "b", "c"):
        waiting.wait(1, lambda name=name: made.append(name))
    assert (made, len(waiting), waiting.unordered) == (["c"], 2, 1)
    waiting.confirmed(1)
    assert made == ["c", "a", "b"]


async def test_a_delivery_past_its_timeout_goes_with_the_next_release_and_is_counted() -> None:
    clock = FakeClock()
    made: list[str] = []
    waiting = order(clock, timeout_seconds=2.0)
    waiting.wait(1, lambda: made.append("a"))
    clock.advance(1.0)
    waiting.wait(2, lambda: made.append("b"))
    clock.advance(1.0)  # a has waited its 2 s, b only 1 s
    waiting.confirmed(0)
    assert (made, waiting.unordered) == (["a"], 1)
    waiting.confirmed(2)
    assert (made, waiting.unordered) == (["a", "b"], 1)


async def test_a_delivery_past_its_timeout_goes_by_itself_when_nothing_else_happens() -> None:
    made = asyncio.Event()
    waiting = KeptOrder(10, 0.01)  # the real clock, and the loop's timer
    waiting.wait(1, made.set)
    async with asyncio.timeout(5):
        await made.wait()
    assert (len(waiting), waiting.unordered) == (0, 1)


async def test_release_all_makes_every_waiting_delivery_in_order() -> None:
    made: list[str] = []
    waiting = order(FakeClock())
    waiting.wait(1, lambda: made.append("a"))
    waiting.wait(2, lambda: made.append("b"))
    waiting.release_all()
    assert (made, len(waiting), waiting.unordered) == (["a", "b"], 0, 2)


async def test_a_delivery_that_asks_for_another_keeps_the_order() -> None:
    made: list[str] = []
    waiting = order(FakeClock())

    def first() -> None:  # a slow client closed, a hook that sends: asked for mid-release
        made.append("first")
        waiting.wait(3, lambda: made.append("third"))

    waiting.wait(1, first)
    waiting.wait(2, lambda: made.append("second"))
    waiting.confirmed(2)
    assert made == ["first", "second"]
    waiting.confirmed(3)
    assert made == ["first", "second", "third"]
