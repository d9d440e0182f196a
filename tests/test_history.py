"""Room and channel history: offsets and epochs, every bound (count, bytes, age, all bytes,
topics), O(expired) expiry, what a resume is told (``decide``), and what it really costs."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudgate.backplane.history import (
    ENTRY_OVERHEAD_BYTES,
    TOPIC_OVERHEAD_BYTES,
    Recovery,
    TopicHistory,
    decide,
)
from mudgate.backplane.topic import Topic, channel_topic, room_topic
from mudgate.memory.budget import memory_budget
from mudgate.protocol import Outgoing, encode_event

from .conftest import FakeClock, make_settings

HALL = room_topic("hall")
OOC = channel_topic("ooc")
EPOCH_TTL = 86_400.0


def history(clock: Callable[[], float], **bounds: Any) -> TopicHistory:
    """A history with the defaults' bounds, or ``bounds``."""
    values: dict[str, Any] = {
        "size": 100,
        "topic_bytes": 64 * 1024,
        "ttl_seconds": 300.0,
        "max_bytes": 8 * 1024 * 1024,
        "max_topics": 10_000,
    }
    values.update(bounds)
    return TopicHistory(clock=clock, **values)


def say(kept: TopicHistory, topic: Topic, text: str = "hi") -> Outgoing:
    """Publish one event to ``topic`` as the hub does: numbered by ``next``, then kept."""
    offset, epoch = kept.next(topic)
    message = encode_event("say", {"text": text, "offset": offset, "epoch": epoch})
    message.topic, message.offset, message.epoch = topic, offset, epoch
    kept.keep(topic, offset, epoch, message)
    return message


def cost(message: Outgoing) -> int:
    """What one kept event counts for against the byte caps."""
    return len(message.data) + ENTRY_OVERHEAD_BYTES


def offsets(recovery: Recovery) -> list[int]:
    return [message.offset for message in recovery.messages]


# Offsets and epochs


def test_offsets_count_from_one_per_topic_in_one_epoch(clock: FakeClock) -> None:
    kept = history(clock)
    hall = [say(kept, HALL) for _ in range(3)]
    ooc = say(kept, OOC)
    hall.append(say(kept, HALL))
    assert [message.offset for message in hall] == [1, 2, 3, 4]
    assert ooc.offset == 1
    assert len({message.epoch for message in hall}) == 1
    assert all(len(message.epoch) == 8 for message in [*hall, ooc])
    assert int(hall[0].epoch, 16) >= 0  # hex
    assert kept.next(HALL) == (5, hall[0].epoch)


def test_the_epoch_stays_while_the_topic_is_remembered_without_events(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    first = say(kept, HALL)
    clock.advance(11)
    kept.expire()
    assert kept.entries == 0
    assert HALL in kept
    again = say(kept, HALL)
    assert (again.offset, again.epoch) == (2, first.epoch)


# Each topic's bounds: count, bytes, age


def test_a_topic_keeps_at_most_size_events(clock: FakeClock) -> None:
    kept = history(clock, size=3)
    for _ in range(10):
        say(kept, HALL)
    assert kept.entries == 3
    assert kept.trimmed == 7
    assert offsets(kept.recover(HALL, 7, kept.next(HALL)[1])) == [8, 9, 10]
    assert kept.recover(HALL, 6, kept.next(HALL)[1]).reason == "too_old"


def test_a_topic_keeps_at_most_topic_bytes(clock: FakeClock) -> None:
    event = say(history(clock), HALL, "x" * 100)
    kept = history(clock, topic_bytes=3 * cost(event) + 10)
    for _ in range(6):
        say(kept, HALL, "x" * 100)
    assert kept.entries == 3
    assert kept.bytes == 3 * cost(event)
    assert offsets(kept.recover(HALL, 3, kept.next(HALL)[1])) == [4, 5, 6]


def test_an_event_larger_than_topic_bytes_is_numbered_but_not_kept(clock: FakeClock) -> None:
    kept = history(clock, topic_bytes=1000)
    say(kept, HALL)
    big = say(kept, HALL, "x" * 2000)
    assert big.offset == 2
    assert (kept.entries, kept.bytes) == (0, 0)
    assert kept.recover(HALL, 2, big.epoch) == Recovery(True, big.epoch, 2)
    assert kept.recover(HALL, 1, big.epoch).reason == "too_old"


def test_events_past_the_ttl_go_when_the_topic_speaks_again(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    for _ in range(3):
        say(kept, HALL)
    clock.advance(10.5)
    say(kept, HALL)
    assert kept.entries == 1
    assert kept.expirations == 3
    assert kept.recover(HALL, 2, kept.next(HALL)[1]).reason == "too_old"
    assert offsets(kept.recover(HALL, 3, kept.next(HALL)[1])) == [4]


def test_events_past_the_ttl_go_when_a_resume_asks_for_them(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    first = say(kept, HALL)
    clock.advance(5)
    say(kept, HALL)
    clock.advance(5.5)  # the first is 10.5 s old, the second 5.5 s
    recovery = kept.recover(HALL, 1, first.epoch)
    assert offsets(recovery) == [2]
    assert kept.entries == 1
    assert kept.recover(HALL, 0, first.epoch).reason == "too_old"


def test_expire_lets_go_of_the_events_of_topics_quiet_past_the_ttl(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    old = say(kept, HALL)
    clock.advance(5)
    say(kept, OOC)
    clock.advance(5.5)
    assert kept.due()
    assert kept.expire() == 1
    assert kept.entries == 1  # the channel's, 5.5 s old
    assert not kept.due()
    # The room keeps its place: a client that had everything is told so.
    assert kept.recover(HALL, 1, old.epoch) == Recovery(True, old.epoch, 1)
    assert kept.recover(HALL, 0, old.epoch).reason == "too_old"


def test_expire_forgets_a_quiet_topic_after_the_epoch_ttl(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    old = say(kept, HALL)
    clock.advance(11)
    kept.expire()
    clock.advance(EPOCH_TTL)
    assert kept.expire() == 1
    assert len(kept) == 0
    assert kept.recover(HALL, 1, old.epoch) == Recovery(False, "", 0, reason="unavailable")
    assert kept.recover(HALL, 0, "") == Recovery(True, "", 0)
    offset, epoch = kept.next(HALL)
    assert offset == 1
    assert epoch != old.epoch


def test_expire_takes_at_most_its_limit(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    for n in range(5):
        say(kept, room_topic(f"r{n}"))
    clock.advance(11)
    assert kept.expired() == 1  # something is due
    assert [kept.expire(limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert kept.expired() == 0


# All topics' bounds: bytes, topics


def test_past_max_bytes_the_least_recently_spoken_lose_their_events(clock: FakeClock) -> None:
    event = say(history(clock), HALL)
    kept = history(clock, max_bytes=4 * cost(event))
    first = say(kept, room_topic("a"))
    say(kept, room_topic("a"))
    say(kept, room_topic("b"))
    say(kept, room_topic("b"))
    say(kept, room_topic("c"))  # past the cap: a, the least recently spoken, loses both
    assert kept.entries == 3
    assert kept.evicted == 2
    assert kept.bytes <= kept.max_bytes
    # Remembered: at its latest, a client lost nothing; before it, events are gone.
    assert kept.recover(room_topic("a"), 2, first.epoch) == Recovery(True, first.epoch, 2)
    assert kept.recover(room_topic("a"), 1, first.epoch).reason == "too_old"
    assert offsets(kept.recover(room_topic("b"), 0, kept.next(room_topic("b"))[1])) == [1, 2]


def test_speaking_again_saves_a_topic_from_max_bytes(clock: FakeClock) -> None:
    event = say(history(clock), HALL)
    kept = history(clock, max_bytes=3 * cost(event))
    say(kept, room_topic("a"))
    say(kept, room_topic("b"))
    say(kept, room_topic("a"))  # now b is the least recently spoken
    say(kept, room_topic("c"))
    assert kept.recover(room_topic("b"), 0, kept.next(room_topic("b"))[1]).reason == "too_old"
    a = kept.recover(room_topic("a"), 0, kept.next(room_topic("a"))[1])
    assert offsets(a) == [1, 2]


def test_one_topic_alone_past_max_bytes_gives_up_its_own_oldest(clock: FakeClock) -> None:
    event = say(history(clock), HALL)
    kept = history(clock, max_bytes=3 * cost(event) + 10)  # offset 10 is a digit longer
    for _ in range(10):
        say(kept, HALL)
    assert kept.entries == 3
    assert kept.evicted == 7
    assert offsets(kept.recover(HALL, 7, kept.next(HALL)[1])) == [8, 9, 10]


def test_past_max_topics_the_least_recently_spoken_are_forgotten(clock: FakeClock) -> None:
    kept = history(clock, max_topics=3)
    gone = say(kept, room_topic("a"))
    for name in ("b", "c", "d"):
        say(kept, room_topic(name))
    assert len(kept) == 3
    assert room_topic("a") not in kept
    assert kept.forgotten == 1
    assert kept.recover(room_topic("a"), 1, gone.epoch).reason == "unavailable"
    back = say(kept, room_topic("a"))
    assert back.offset == 1
    assert back.epoch != gone.epoch  # a new run of offsets: the old one is gone
    assert kept.recover(room_topic("a"), 1, gone.epoch).reason == "epoch_changed"


def test_quiet_topics_are_forgotten_before_speaking_ones(clock: FakeClock) -> None:
    kept = history(clock, max_topics=3, ttl_seconds=10.0)
    say(kept, room_topic("a"))
    say(kept, room_topic("b"))
    clock.advance(11)
    say(kept, room_topic("c"))
    kept.expire()  # a and b are quiet now
    say(kept, room_topic("a"))  # a speaks again: b is the only quiet one
    say(kept, room_topic("d"))
    assert room_topic("b") not in kept
    assert {room_topic(name) in kept for name in "acd"} == {True}


# What costs what: O(expired)


class Reading(float):
    """A clock reading that counts its comparisons: how many topics ``expire`` looked at."""

    __slots__ = ()
    compared: ClassVar[int] = 0

    def __le__(self, other: float) -> bool:
        Reading.compared += 1
        return float(self) <= other


def looked_at_by_expire(topics: int, due: int) -> tuple[int, int]:
    """Of ``topics`` remembered, ``due`` speaking past the TTL and ``due`` quiet past the epoch
    TTL: how many ``expire`` let go, and how many topics it compared doing so."""
    clock = FakeClock()
    kept = history(lambda: Reading(clock.now), ttl_seconds=10.0, max_topics=topics)
    start = clock.now
    for n in range(due):  # quiet since the start
        say(kept, room_topic(f"q{n}"))
    clock.advance(11)
    kept.expire()
    # The rest quiet since soon after (each falls quiet as the next speaks: no events kept).
    kept.max_bytes = 0
    for n in range(topics - 2 * due):
        say(kept, room_topic(f"n{n:07d}"))
    clock.advance(11)
    kept.expire()
    kept.max_bytes = 2**40
    clock.now = start + EPOCH_TTL - 30
    for n in range(due):  # speaking lately, but not within the TTL
        say(kept, room_topic(f"s{n}"))
    clock.now = start + EPOCH_TTL + 1
    assert len(kept) == topics
    Reading.compared = 0
    expired = kept.expire()
    return expired, Reading.compared


def test_expire_looks_only_at_what_is_due() -> None:
    expired, compared = looked_at_by_expire(10_000, 100)
    assert expired == 200
    # Each due topic, and the first quiet one that is not (none speaks within the TTL).
    assert compared == 201
    assert looked_at_by_expire(100_000, 100) == (expired, compared)


# What a resume is told


KEPT = [(offset, encode_event("say", {"n": offset})) for offset in range(5, 11)]


@pytest.mark.parametrize(
    ("asked", "epoch", "recovered", "missed", "reason"),
    [
        (10, "e", True, [], None),  # at the latest: nothing missed
        (7, "e", True, [8, 9, 10], None),  # inside what is kept: the rest, in order
        (4, "e", True, [5, 6, 7, 8, 9, 10], None),  # just before the oldest kept
        (3, "e", False, [], "too_old"),  # the 4th is gone
        (11, "e", False, [], "offset_ahead"),  # never said
        (10, "f", False, [], "epoch_changed"),  # another run of offsets
        (0, "", False, [], "too_old"),  # no position at all: the whole epoch, not all kept
        (0, "f", False, [], "epoch_changed"),  # none yet, in another run of offsets
    ],
)
def test_decide(asked: int, epoch: str, recovered: bool, missed: list[int], reason: str) -> None:
    recovery = decide(asked, epoch, "e", 10, KEPT)
    assert (recovery.recovered, recovery.reason) == (recovered, reason)
    assert (recovery.epoch, recovery.offset) == ("e", 10)
    assert [msgspec.json.decode(message.data)["n"] for message in recovery.messages] == missed


def test_decide_with_nothing_kept_recovers_only_a_client_at_the_latest() -> None:
    assert decide(10, "e", "e", 10, []) == Recovery(True, "e", 10)
    assert decide(9, "e", "e", 10, []).reason == "too_old"


def test_a_client_with_no_position_gets_the_whole_epoch_when_all_of_it_is_kept() -> None:
    recovery = decide(
        0, "", "e", 10, [(offset, encode_event("say", {})) for offset in range(1, 11)]
    )
    assert (recovery.recovered, len(recovery.messages)) == (True, 10)
    assert decide(0, "", "e", 0, []) == Recovery(True, "e", 0)


def test_position_is_the_latest_offset_and_epoch_of_a_remembered_topic(clock: FakeClock) -> None:
    kept = history(clock, ttl_seconds=10.0)
    assert kept.position(HALL) is None
    said = [say(kept, HALL) for _ in range(3)]
    clock.advance(11)
    kept.expire()  # quiet now: its place is still known
    assert kept.position(HALL) == (3, said[0].epoch)


def test_an_unknown_topic_recovers_a_client_that_had_nothing(clock: FakeClock) -> None:
    kept = history(clock)
    assert kept.recover(HALL, 0, "") == Recovery(True, "", 0)
    assert kept.recover(HALL, 0, "abcd") == Recovery(True, "", 0)
    assert kept.recover(HALL, 3, "abcd") == Recovery(False, "", 0, reason="unavailable")


def test_what_is_recovered_is_a_copy(clock: FakeClock) -> None:
    kept = history(clock)
    sent = [say(kept, HALL, f"line {n}") for n in range(3)]
    first = kept.recover(HALL, 0, sent[0].epoch).messages
    for message in first:  # what a connection does with its own: frame it, view it, drop it
        assert message.frame
        assert message.sse
        message.view("telnet", lambda m: b"text")
        message.offset, message.epoch = 999, "mangled"
    again = kept.recover(HALL, 0, sent[0].epoch).messages
    assert [message.offset for message in again] == [1, 2, 3]
    assert {message.epoch for message in again} == {sent[0].epoch}
    assert [message.data for message in again] == [message.data for message in sent]
    assert {message.topic for message in again} == {HALL}
    assert not {id(message) for message in again} & {id(message) for message in first}
    assert kept.bytes == sum(cost(message) for message in sent)


# Every bound at once, whatever happens


operations = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.integers(0, 7), st.integers(1, 400)),
        st.tuples(st.just("wait"), st.floats(0.0, 30.0)),
        st.tuples(st.just("expire"), st.none()),
        st.tuples(st.just("resume"), st.integers(0, 7), st.integers(0, 40)),
    ),
    max_size=60,
)


@given(operations)
@settings(max_examples=200, deadline=None)
def test_every_bound_holds_and_a_resume_gets_exactly_what_it_missed(
    steps: list[tuple[Any, ...]],
) -> None:
    clock = FakeClock()
    kept = history(clock, size=5, topic_bytes=2000, ttl_seconds=20.0, max_bytes=4000, max_topics=4)
    said: dict[Topic, list[Outgoing]] = {}  # every event of each topic's current epoch
    for step in steps:
        if step[0] == "say":
            topic = room_topic(f"r{step[1]}")
            message = say(kept, topic, "x" * step[2])
            if said.get(topic) and said[topic][-1].epoch != message.epoch:
                said[topic] = []
            said.setdefault(topic, []).append(message)
        elif step[0] == "wait":
            clock.advance(step[1])
        elif step[0] == "expire":
            kept.expire()
        else:
            topic = room_topic(f"r{step[1]}")
            history_of = said.get(topic, [])
            epoch = history_of[-1].epoch if history_of else ""
            asked = min(step[2], len(history_of))
            recovery = kept.recover(topic, asked, epoch)
            if topic not in kept:
                assert not recovery.recovered or asked == 0
            elif recovery.recovered:
                assert recovery.offset == len(history_of)
                assert [m.data for m in recovery.messages] == [m.data for m in history_of[asked:]]
            else:
                assert recovery.reason == "too_old"
        assert kept.bytes <= kept.max_bytes
        assert len(kept) <= kept.max_topics
        records = [*kept._speaking.values(), *kept._quiet.values()]
        assert kept.entries == sum(len(record.entries) for record in records)
        assert kept.bytes == sum(record.bytes for record in records)
        for record in records:
            assert len(record.entries) <= kept.size
            assert record.bytes <= kept.topic_bytes
            assert record.bytes == sum(cost(message) for _, _, message in record.entries)
            assert [offset for offset, _, _ in record.entries] == list(
                range(record.latest - len(record.entries) + 1, record.latest + 1)
            )


# What it costs


def traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """The bytes ``build`` leaves allocated (tracemalloc), and what it returned. The
    collection before the reading empties the free lists too (floats, tuples): what they
    hold is the interpreter's, not what was built."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, built
    finally:
        tracemalloc.stop()


def ticking() -> Callable[[], float]:
    """A clock whose every reading is a new float, as time.monotonic's are."""
    ticks = itertools.count()
    return lambda: 1000.0 + next(ticks) * 0.001


def as_the_hub_says(kept: TopicHistory, topic: Topic, n: int) -> int:
    """One event numbered, encoded, kept and then dropped, as the hub publishes it; its size."""
    offset, epoch = kept.next(topic)
    fields = {"from": "alice", "text": "hello", "ts": 1.0, "seq": 10**6 + n}
    message = encode_event("say", {**fields, "offset": offset, "epoch": epoch})
    message.topic, message.offset, message.epoch = topic, offset, epoch
    kept.keep(topic, offset, epoch, message)
    return len(message.data)


SAMPLES = 5000
UNBOUNDED: dict[str, Any] = {
    "size": 10**9,
    "topic_bytes": 10**12,
    "max_bytes": 10**15,
    "max_topics": 10**9,
}


def test_a_kept_event_costs_its_bytes_and_entry_overhead_bytes() -> None:
    kept = history(ticking(), **UNBOUNDED)
    for n in range(300):  # offsets past the small ints Python shares
        as_the_hub_says(kept, HALL, n)
    allocated, data = traced(lambda: sum(as_the_hub_says(kept, HALL, n) for n in range(SAMPLES)))
    overhead = (allocated - data) / SAMPLES
    assert overhead <= ENTRY_OVERHEAD_BYTES, f"{overhead:.0f} bytes an event beyond its data"
    assert overhead > ENTRY_OVERHEAD_BYTES / 2, "the overhead is far too high: measure again"


def names(count: int) -> Iterator[Topic]:
    # The longest names there are: "channel:" and 32 characters.
    return (channel_topic(f"{n:032d}") for n in range(count))


def test_a_remembered_topic_costs_at_most_topic_overhead_bytes() -> None:
    clock = FakeClock()
    readings = ticking()
    kept = history(lambda: clock.now + readings(), **{**UNBOUNDED, "ttl_seconds": 100.0})
    data = 0

    def speak() -> None:
        nonlocal data
        data = sum(as_the_hub_says(kept, topic, n) for n, topic in enumerate(names(SAMPLES)))

    def fall_quiet() -> None:
        clock.advance(200)
        kept.expire()  # each topic falls quiet: both dicts are now sized for all of them

    speaking, _ = traced(speak)
    quieter, _ = traced(fall_quiet)
    assert (len(kept), kept.entries) == (SAMPLES, 0)
    speaking_topic = (speaking - data) / SAMPLES - ENTRY_OVERHEAD_BYTES
    assert speaking_topic <= TOPIC_OVERHEAD_BYTES, f"{speaking_topic:.0f} bytes a speaking topic"
    quiet_topic = (speaking + quieter - data) / SAMPLES - ENTRY_OVERHEAD_BYTES
    assert quiet_topic <= TOPIC_OVERHEAD_BYTES, f"{quiet_topic:.0f} bytes a quiet topic"


def test_a_topic_that_said_a_lot_costs_no_more_once_quiet() -> None:
    # A deque kept the blocks it had emptied: 2.3 KB for a topic that had said a hundred.
    clock = FakeClock()
    readings = ticking()
    kept = history(lambda: clock.now + readings(), ttl_seconds=100.0)

    def talk_then_fall_quiet() -> None:
        for n, topic in enumerate(names(500)):
            for said in range(100):
                as_the_hub_says(kept, topic, n * 100 + said)
        clock.advance(200)
        kept.expire()

    allocated, _ = traced(talk_then_fall_quiet)
    assert allocated / 500 <= TOPIC_OVERHEAD_BYTES


# In the memory budget


def test_the_budget_has_a_line_for_the_events_and_one_for_the_topics() -> None:
    def lines(**overrides: Any) -> dict[str, tuple[int, int]]:
        budget = memory_budget(make_settings(**overrides), 2**34)
        return {
            line.structure: (line.max_entries, line.bytes_per_entry)
            for line in budget.lines
            if line.structure.startswith("room_history")
        }

    assert lines(room_history_max_bytes=1_000_000, room_history_max_topics=500) == {
        "room_history": (1, 1_000_000),
        "room_history_topics": (500, TOPIC_OVERHEAD_BYTES),
    }
    assert lines(room_history_max_bytes=2_000_000, room_history_max_topics=7) == {
        "room_history": (1, 2_000_000),
        "room_history_topics": (7, TOPIC_OVERHEAD_BYTES),
    }
    assert lines(room_history_size=0) == {
        "room_history": (0, 8 * 1024 * 1024),
        "room_history_topics": (0, TOPIC_OVERHEAD_BYTES),
    }
