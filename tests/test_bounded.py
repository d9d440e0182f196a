"""The containers against simple models, and their O(expired) expiry."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mudgate.bounded import (
    BoundedQueue,
    InFlight,
    Mailboxes,
    Refused,
    SlidingWindowLimiter,
    TokenBuckets,
    TTLMap,
)

from .conftest import FakeClock

keys = st.integers(min_value=0, max_value=20)
steps = st.floats(min_value=0, max_value=30, allow_nan=False)


# TTLMap

ttl_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, st.integers()),
        st.tuples(st.just("pop"), keys, st.none()),
        st.tuples(st.just("advance"), steps, st.none()),
        st.tuples(st.just("expire"), st.none(), st.none()),
    ),
    max_size=60,
)


@given(capacity=st.integers(1, 8), ops=ttl_ops)
def test_ttl_map_matches_a_model(capacity: int, ops: list[tuple[str, object, object]]) -> None:
    clock = FakeClock()
    ttl = 10.0
    container: TTLMap[int, int] = TTLMap(capacity, ttl, clock=clock)
    model: OrderedDict[int, tuple[float, int]] = OrderedDict()
    evictions = 0
    for op, key, value in ops:
        if op == "set":
            assert isinstance(key, int)
            assert isinstance(value, int)
            if key in model:
                model.move_to_end(key)
            else:
                # A new key first forgets up to two expired ones, and evicts only if none was.
                forgotten = 0
                while forgotten < 2 and model and next(iter(model.values()))[0] <= clock.now:
                    model.popitem(last=False)
                    forgotten += 1
                if not forgotten and len(model) >= capacity:
                    model.popitem(last=False)
                    evictions += 1
            model[key] = (clock.now + ttl, value)
            container.set(key, value)
        elif op == "pop":
            assert isinstance(key, int)
            entry = model.pop(key, None)
            expected = entry[1] if entry and entry[0] > clock.now else None
            assert container.pop(key) == expected
        elif op == "advance":
            assert isinstance(key, float)
            clock.advance(key)
        else:
            expired = [k for k, (at, _) in model.items() if at <= clock.now]
            for k in expired:
                del model[k]
            assert container.expire() == len(expired)
        assert len(container) == len(model) <= capacity
        assert container.evictions == evictions
        for k, (at, v) in model.items():
            assert container.get(k) == (v if at > clock.now else None)


def test_ttl_map_evicts_the_oldest_past_capacity() -> None:
    container: TTLMap[str, int] = TTLMap(2)
    container.set("a", 1)
    container.set("b", 2)
    container.set("a", 3)  # refreshes "a": "b" is now the oldest
    container.set("c", 4)
    assert container.items() == [("a", 3), ("c", 4)]
    assert container.stats().evictions == 1


def test_ttl_map_expiry_stops_at_the_first_live_entry(clock: FakeClock) -> None:
    container: TTLMap[int, int] = TTLMap(10_000, 10.0, clock=clock)
    for i in range(100):
        container.set(i, i)
    clock.advance(5)
    for i in range(100, 10_000):
        container.set(i, i)
    clock.advance(5)  # the first 100 are due, the rest have 5 s left
    assert container.expire(limit=30) == 30
    assert container.expire() == 70
    assert container.expire() == 0
    assert len(container) == 9_900
    assert container.stats().expirations == 100


def test_ttl_map_reads_do_not_return_expired_entries(clock: FakeClock) -> None:
    container: TTLMap[str, int] = TTLMap(4, 1.0, clock=clock)
    container.set("a", 1)
    assert "a" in container
    clock.advance(0.5)
    container.set("a", 2)  # writing restarts the TTL
    clock.advance(0.5)
    assert container.get("a") == 2
    clock.advance(0.5)
    assert "a" not in container
    assert container.get("a") is None
    assert container.pop("a") is None
    assert container.items() == []


def test_ttl_map_without_ttl_keeps_entries(clock: FakeClock) -> None:
    container: TTLMap[str, int] = TTLMap(4, clock=clock)
    container.set("a", 1)
    clock.advance(1e9)
    assert container.expire() == 0
    assert list(container) == ["a"]
    container.clear()
    assert len(container) == 0


@pytest.mark.parametrize(("capacity", "ttl"), [(0, None), (1, 0.0), (1, -1.0)])
def test_containers_reject_nonsense_bounds(capacity: int, ttl: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        TTLMap(capacity, ttl)
    with pytest.raises(ValueError, match="must be"):
        BoundedQueue(capacity, ttl)


def test_limiter_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SlidingWindowLimiter(0, 1.0, 1)
    with pytest.raises(ValueError, match="positive"):
        SlidingWindowLimiter(1, 0.0, 1)


# BoundedQueue

queue_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers()),
        st.tuples(st.just("advance"), steps),
        st.tuples(st.just("expire"), st.none()),
    ),
    max_size=60,
)


@given(capacity=st.integers(1, 8), ops=queue_ops)
def test_bounded_queue_matches_a_model(capacity: int, ops: list[tuple[str, object]]) -> None:
    clock = FakeClock()
    queue: BoundedQueue[int] = BoundedQueue(capacity, 10.0, clock=clock)
    model: list[tuple[float, int]] = []
    for op, arg in ops:
        if op == "append":
            assert isinstance(arg, int)
            if len(model) >= capacity:
                model.pop(0)
            model.append((clock.now + 10.0, arg))
            queue.append(arg)
        elif op == "advance":
            assert isinstance(arg, float)
            clock.advance(arg)
        else:
            live = [entry for entry in model if entry[0] > clock.now]
            assert queue.expire() == len(model) - len(live)
            model = live
        assert len(queue) == len(model) <= capacity
    assert queue.drain() == [item for at, item in model if at > clock.now]
    assert len(queue) == 0


def test_bounded_queue_keeps_the_newest(clock: FakeClock) -> None:
    queue: BoundedQueue[int] = BoundedQueue(3, clock=clock)
    for i in range(5):
        queue.append(i)
    assert queue.stats().evictions == 2
    assert queue.drain() == [2, 3, 4]


def test_bounded_queue_expires_in_order_and_stops_early(clock: FakeClock) -> None:
    queue: BoundedQueue[str] = BoundedQueue(10, 5.0, clock=clock)
    queue.append("old")
    clock.advance(3)
    queue.append("new")
    clock.advance(2)
    assert queue.expire(limit=0) == 0
    assert queue.expire() == 1
    assert queue.drain() == ["new"]
    assert queue.stats().expirations == 1


# SlidingWindowLimiter

limiter_ops = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.sampled_from("abcd")),
        st.tuples(st.just("advance"), st.floats(0, 12, allow_nan=False)),
        st.tuples(st.just("expire"), st.none()),
    ),
    max_size=80,
)


@given(max_events=st.integers(1, 4), ops=limiter_ops)
def test_limiter_never_allows_more_than_its_limit(
    max_events: int, ops: list[tuple[str, object]]
) -> None:
    """No sliding window ever holds more than max_events allowed hits, and a key idle for a
    whole window is always allowed again."""
    clock = FakeClock()
    window = 10.0
    limiter = SlidingWindowLimiter(max_events, window, max_keys=10, clock=clock)
    allowed: dict[str, list[float]] = {}
    for op, arg in ops:
        if op == "hit":
            assert isinstance(arg, str)
            history = allowed.setdefault(arg, [])
            idle = not history or history[-1] <= clock.now - window
            if limiter.hit(arg):
                history.append(clock.now)
            else:
                assert not idle
            in_window = [t for t in history if t > clock.now - window]
            assert len(in_window) <= max_events
        elif op == "advance":
            assert isinstance(arg, float)
            clock.advance(arg)
        else:
            limiter.expire()
        assert len(limiter) <= 4


def test_limiter_counts_per_key(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(2, 10.0, max_keys=10, clock=clock)
    assert limiter.hit("a")
    assert limiter.hit("a")
    assert not limiter.hit("a")
    assert limiter.hit("b")
    assert limiter.recent("a") == 2
    assert limiter.recent("nobody") == 0


def test_limiter_counts_the_previous_window_too(clock: FakeClock) -> None:
    clock.now = 108.0  # late in the fixed window [100, 110)
    limiter = SlidingWindowLimiter(10, 10.0, max_keys=10, clock=clock)
    for _ in range(10):
        assert limiter.hit("a")
    clock.advance(4.0)  # a new fixed window, but the sliding one still holds all ten
    assert limiter.recent("a") == 10
    assert not limiter.hit("a")
    clock.advance(6.0)  # ten seconds on, they have all left it
    assert limiter.recent("a") == 0
    assert limiter.hit("a")


def test_limiter_caps_keys(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(3, 60.0, max_keys=2, clock=clock)
    for _ in range(3):
        limiter.hit("a")
    limiter.hit("b")
    limiter.hit("c")  # evicts "a", the idlest
    assert limiter.recent("a") == 0
    assert limiter.stats().evictions == 1
    assert limiter.stats().size == 2


def test_limiter_forgets_keys_once_their_last_event_leaves_the_window(clock: FakeClock) -> None:
    clock.now = 100.0
    limiter = SlidingWindowLimiter(2, 10.0, max_keys=10, clock=clock)
    limiter.hit("a")
    clock.advance(5.0)
    limiter.hit("b")
    assert limiter.expired() == 0
    clock.advance(5.0)  # "a" is 10 s old
    assert limiter.expired() == 1
    assert limiter.expire(limit=5) == 1
    assert limiter.expire() == 0
    clock.advance(5.0)
    assert limiter.expire() == 1
    assert limiter.stats().expirations == 2


@given(max_events=st.integers(1, 4), ops=limiter_ops)
def test_a_refused_key_is_allowed_again_exactly_when_retry_after_says(
    max_events: int, ops: list[tuple[str, object]]
) -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(max_events, 10.0, max_keys=10, clock=clock)
    for op, arg in ops:
        if op == "hit":
            assert isinstance(arg, str)
            wait = limiter.retry_after(arg)
            assert limiter.hit(arg) is (wait == 0)
            if wait:
                clock.advance(wait + 1e-9)  # floating point: "after", not "at"
                assert limiter.retry_after(arg) == 0
                assert limiter.hit(arg)
        elif op == "advance":
            assert isinstance(arg, float)
            clock.advance(arg)


def test_retry_after_is_the_wait_for_the_window_not_a_guess(clock: FakeClock) -> None:
    clock.now = 3600.0 * 10  # the start of a fixed window
    limiter = SlidingWindowLimiter(2, 3600.0, max_keys=10, clock=clock)
    limiter.hit("ip")
    limiter.hit("ip")
    assert limiter.retry_after("ip") == 3600.0
    clock.advance(600)
    assert limiter.retry_after("ip") == 3000.0


# TokenBuckets

bucket_ops = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.sampled_from("abc")),
        st.tuples(st.just("advance"), st.floats(0, 3, allow_nan=False)),
        st.tuples(st.just("expire"), st.none()),
    ),
    max_size=100,
)


@given(rate=st.floats(0.5, 5), burst=st.integers(1, 5), ops=bucket_ops)
def test_a_bucket_never_allows_more_than_its_burst_and_rate(
    rate: float, burst: int, ops: list[tuple[str, object]]
) -> None:
    """However a key sends, what it is allowed in any stretch of time is at most burst plus
    rate times that time; and a key that waited as long as it was told is allowed."""
    clock = FakeClock()
    buckets = TokenBuckets(rate, burst, max_keys=10, clock=clock)
    allowed: dict[str, list[float]] = {}
    told: dict[str, float] = {}
    for op, arg in ops:
        if op == "take":
            assert isinstance(arg, str)
            wait = buckets.take(arg)
            if arg in told and clock.now >= told[arg]:
                assert wait == 0, "waited as told, and still refused"
            if wait == 0:
                times = allowed.setdefault(arg, [])
                times.append(clock.now)
                for start in times:
                    in_stretch = sum(1 for t in times if t >= start)
                    assert in_stretch <= burst + rate * (clock.now - start) + 1e-6
                told.pop(arg, None)
            elif wait != math.inf:
                told[arg] = clock.now + wait + 1e-9  # the latest refusal says
        elif op == "advance":
            assert isinstance(arg, float)
            clock.advance(arg)
        else:
            buckets.expire()


def test_a_sender_who_keeps_going_is_over_the_limit(clock: FakeClock) -> None:
    buckets = TokenBuckets(1.0, 3, max_keys=10, clock=clock)
    assert [buckets.take("griefer") for _ in range(3)] == [0, 0, 0]
    # Refused: each refused take adds to the wait.
    assert [buckets.take("griefer") for _ in range(3)] == [2.0, 3.0, 4.0]
    assert buckets.take("griefer") == math.inf
    assert buckets.take("someone else") == 0
    clock.advance(4.0)
    assert buckets.take("griefer") == 0


def test_full_buckets_are_forgotten_in_o_expired(clock: FakeClock) -> None:
    buckets = TokenBuckets(2.0, 4, max_keys=3, clock=clock)
    buckets.take("a")
    clock.advance(1.0)
    buckets.take("b")
    assert buckets.expired() == 0
    assert not buckets.due()
    clock.advance(3.0)  # "a" has had 2 * burst / rate = 4 s to refill from the bottom
    assert buckets.due()
    assert buckets.expired() == 1
    assert buckets.expire() == 1
    assert len(buckets) == 1
    buckets.take("c")
    buckets.take("d")
    buckets.take("e")  # past max_keys: the idlest is forgotten
    assert buckets.stats().evictions == 1
    assert buckets.stats().size == 3


def test_buckets_reject_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBuckets(0, 1, 1)


# Mailboxes

mailbox_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.sampled_from("abcde"),
            st.tuples(st.integers(1, 9), st.sampled_from(["x", "y", None])),
        ),
        st.tuples(st.just("take"), st.sampled_from("abcde"), st.none()),
        st.tuples(st.just("advance"), st.floats(0, 6, allow_nan=False), st.none()),
        st.tuples(st.just("expire"), st.none(), st.none()),
    ),
    max_size=80,
)


@given(ops=mailbox_ops)
def test_mailboxes_stay_within_every_cap(ops: list[tuple[str, object, object]]) -> None:
    """Whatever happens: at most max_keys mailboxes of max_per_key items, at most max_bytes
    and max_per_sender per sender held, items come out in order, nothing older than the TTL
    is ever taken, and nothing queued is lost to make room."""
    clock = FakeClock()
    boxes: Mailboxes[str, tuple[float, int]] = Mailboxes(
        3, 4, 20, 10.0, max_per_sender=3, clock=clock, sizeof=lambda item: item[1]
    )
    queued: dict[str, list[tuple[float, int]]] = {}  # what a model says each box holds
    for op, key, arg in ops:
        if op == "append":
            assert isinstance(key, str)
            assert isinstance(arg, tuple)
            size, sender = arg
            item = (clock.now, size)
            if boxes.append(key, item, sender) is None:
                queued.setdefault(key, []).append(item)
        elif op == "take":
            assert isinstance(key, str)
            taken = boxes.take(key)
            expected = [item for item in queued.pop(key, []) if item[0] > clock.now - 10.0]
            assert taken == expected
        elif op == "advance":
            assert isinstance(key, float)
            clock.advance(key)
        else:
            boxes.expire()
            assert not boxes.due()
            for box in queued.values():
                box[:] = [item for item in box if item[0] > clock.now - 10.0]
        assert len(boxes) <= 3
        assert boxes.size_bytes <= 20
        assert all(boxes.count(k) <= 4 for k in "abcde")
        assert all(boxes.sent_by(sender) <= 3 for sender in "xy")
        assert boxes.items_held == sum(boxes.count(k) for k in "abcde")


def test_mailboxes_expire_in_arrival_order_in_o_expired(clock: FakeClock) -> None:
    boxes: Mailboxes[str, int] = Mailboxes(100_000, 10, 2**30, 60.0, clock=clock)
    for i in range(1000):
        boxes.append(f"old{i}", i)
    clock.advance(30)
    for i in range(50_000):
        boxes.append(f"new{i}", i)
    clock.advance(30)
    assert boxes.expired() == 1000
    assert boxes.due()
    assert boxes.expire(limit=400) == 400
    assert boxes.expire() == 600
    assert not boxes.due()
    assert len(boxes) == 50_000
    assert boxes.stats().expirations == 1000


def test_a_delivered_message_frees_its_bytes_at_once(clock: FakeClock) -> None:
    boxes: Mailboxes[str, bytes] = Mailboxes(10, 10, 100, 60.0, clock=clock, sizeof=len)
    boxes.append("a", b"x" * 60)
    assert boxes.append("b", b"y" * 60) is Refused.MAILBOX_FULL  # over 100 bytes
    assert boxes.take("a") == [b"x" * 60]
    assert (boxes.items_held, boxes.size_bytes) == (0, 0)
    assert boxes.append("b", b"y" * 60) is None
    clock.advance(60)
    assert boxes.expire() == 1  # "b"'s; "a"'s left the line as delivered


def test_one_sender_cannot_push_out_what_others_queued(clock: FakeClock) -> None:
    boxes: Mailboxes[str, str] = Mailboxes(10, 5, 1000, 60.0, max_per_sender=3, clock=clock)
    assert boxes.append("bob", "from alice", "alice") is None
    for _ in range(3):
        assert boxes.append("bob", "spam", "griefer") is None
    assert boxes.append("bob", "spam", "griefer") is Refused.SENDER_FULL
    assert boxes.append("carol", "spam", "griefer") is Refused.SENDER_FULL
    assert boxes.append("bob", "from the game") is None  # the game has no share to exceed
    assert boxes.append("bob", "from dave", "dave") is Refused.MAILBOX_FULL  # bob's is full
    assert boxes.take("bob")[0] == "from alice"
    assert boxes.sent_by("griefer") == 0  # delivered: the share is free again
    assert boxes.refusals == 3


def test_mailboxes_refuse_a_new_mailbox_past_max_keys(clock: FakeClock) -> None:
    boxes: Mailboxes[str, int] = Mailboxes(2, 10, 1000, 60.0, clock=clock)
    boxes.append("a", 1)
    boxes.append("b", 2)
    assert boxes.append("c", 3) is Refused.MAILBOX_FULL
    assert boxes.append("a", 4) is None
    assert boxes.take("a") == [1, 4]


def test_mailboxes_reject_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="caps"):
        Mailboxes(0, 1, 1, 1.0)


def test_the_line_is_compacted_as_messages_are_delivered(clock: FakeClock) -> None:
    boxes: Mailboxes[str, int] = Mailboxes(2, 3, 10**9, 60.0, clock=clock)
    for i in range(1000):
        boxes.append("a", i)
        boxes.take("a")  # delivered at once: only the line still holds them
    assert len(boxes._line) <= 2 * 64 + 2
    boxes.append("a", 1)
    assert boxes.take("a") == [1]


def test_new_keys_forget_expired_ones_without_waiting_for_a_sweep() -> None:
    clock = FakeClock()
    seen: TTLMap[str, int] = TTLMap(1000, 10.0, clock=clock)
    limiter = SlidingWindowLimiter(5, 10.0, 1000, clock=clock)
    for i in range(100):  # churn: a new key every second, each forgotten 10 s later
        seen.set(f"p{i}", i)
        limiter.hit(f"p{i}")
        clock.advance(1.0)
    # Each holds about its working set (10 s of keys), nowhere near its cap of 1000.
    assert len(seen) <= 12
    assert len(limiter) <= 22  # a limiter key lasts one window after its window ends
    assert seen.stats().evictions == 0
    assert limiter.evictions == 0


# InFlight: requests under way per key


def test_in_flight_counts_up_to_its_limit_per_key() -> None:
    in_flight = InFlight(limit=2, max_keys=10)
    assert in_flight.enter("alice")
    assert in_flight.enter("alice")
    assert not in_flight.enter("alice")
    assert in_flight.enter("bob")  # another key has its own count
    assert (in_flight["alice"], in_flight.refused) == (2, 1)
    in_flight.leave("alice")
    assert in_flight.enter("alice")


def test_in_flight_forgets_a_key_with_its_last_request() -> None:
    in_flight = InFlight(limit=3, max_keys=10)
    in_flight.enter("alice")
    in_flight.enter("alice")
    in_flight.leave("alice")
    in_flight.leave("alice")
    in_flight.leave("alice")  # one too many: harmless
    assert len(in_flight) == 0
    assert in_flight["alice"] == 0


def test_in_flight_refuses_a_new_key_past_max_keys_rather_than_drop_a_count() -> None:
    in_flight = InFlight(limit=1, max_keys=2)
    assert in_flight.enter("a")
    assert in_flight.enter("b")
    assert not in_flight.enter("c")
    assert len(in_flight) == 2
    in_flight.leave("a")
    assert in_flight.enter("c")


def test_in_flight_needs_positive_bounds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(limit=0, max_keys=1)


def test_in_flight_counts_what_is_under_way_for_every_key() -> None:
    in_flight = InFlight(limit=2, max_keys=10)
    in_flight.enter("alice")
    in_flight.enter("bob")
    in_flight.enter("bob")
    in_flight.leave("bob")
    in_flight.leave("carol")  # nothing under way: nothing changes
    assert in_flight.under_way == 2
