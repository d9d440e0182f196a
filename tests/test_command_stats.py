"""Command stats: counts, errors and latency per op, with as many labels as the registry has
ops, whatever clients send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mudgate.command_stats import BUCKETS_SECONDS, UNKNOWN, CommandStats, OpStats
from mudgate.protocol import ErrorCode

KNOWN = {"ping", "say", "look"}


def by_op(stats: CommandStats) -> dict[str, tuple[int, dict[str, int]]]:
    return {op.op: (op.count, dict(op.errors)) for op in stats.snapshot()}


def test_an_op_the_registry_knows_is_counted_under_its_name() -> None:
    stats = CommandStats(KNOWN)
    stats.observe("ping", 0.001)
    stats.observe("ping", 0.002)
    stats.observe("say", 0.003, ErrorCode.INVALID_ARGS)
    assert by_op(stats) == {"ping": (2, {}), "say": (1, {"invalid_args": 1})}


def test_ops_nobody_registered_share_one_label() -> None:
    stats = CommandStats(KNOWN)
    for i in range(1000):
        stats.observe(f"made-up-{i}", 0.001, ErrorCode.UNKNOWN_OP)
    assert by_op(stats) == {UNKNOWN: (1000, {"unknown_op": 1000})}


def test_ops_past_max_ops_share_the_unknown_label() -> None:
    stats = CommandStats(KNOWN, max_ops=2)
    for op in ("look", "ping", "say", "look"):
        stats.observe(op, 0.001)
    assert by_op(stats) == {"look": (2, {}), "ping": (1, {}), UNKNOWN: (1, {})}


def test_an_error_code_that_is_not_mudgates_is_counted_as_unknown() -> None:
    stats = CommandStats(KNOWN)
    stats.observe("say", 0.001, "not_a_code_of_ours")
    stats.observe("say", 0.001, "player_not_found")  # the code as a plain string
    assert by_op(stats) == {"say": (2, {UNKNOWN: 1, "player_not_found": 1})}
    assert stats.snapshot()[0].error_count == 2


def test_each_duration_counts_in_every_bucket_at_or_above_it() -> None:
    stats = CommandStats(KNOWN)
    for seconds in (0.0, 0.0005, 0.0006, 0.3, 5.0, 60.0):
        stats.observe("look", seconds)
    (look,) = stats.snapshot()
    buckets = dict(zip(BUCKETS_SECONDS, look.buckets, strict=True))
    assert buckets[0.0005] == 2  # a bound is inclusive, as Prometheus's le
    assert buckets[0.001] == 3
    assert buckets[0.25] == 3
    assert buckets[0.5] == 4
    assert buckets[5.0] == 5
    assert buckets[float("inf")] == look.count == 6
    assert look.sum_seconds == pytest.approx(65.3011)


def test_quantiles_are_estimated_within_their_bucket() -> None:
    stats = CommandStats(KNOWN)
    for _ in range(98):
        stats.observe("look", 0.0002)  # the first bucket, (0, 0.5 ms]
    stats.observe("look", 0.2)
    stats.observe("look", 0.2)  # (0.1, 0.25]
    (look,) = stats.snapshot()
    assert look.quantile(0.5) == pytest.approx(0.0005 * 50 / 98)
    # Rank 99 of 100 is the first of the two in (0.1, 0.25]: halfway through it.
    assert look.quantile(0.99) == pytest.approx(0.175)
    assert look.mean_seconds == pytest.approx((98 * 0.0002 + 0.4) / 100)


def test_a_quantile_past_the_last_bound_is_that_bound() -> None:
    stats = CommandStats(KNOWN)
    stats.observe("look", 30.0)
    (look,) = stats.snapshot()
    assert look.quantile(0.99) == 5.0


def test_an_op_counted_zero_times_has_zero_latency() -> None:
    nothing = OpStats("look", 0, 0.0, (0,) * len(BUCKETS_SECONDS), {})
    assert (nothing.quantile(0.99), nothing.mean_seconds) == (0.0, 0.0)


def test_the_slowest_ops_come_first() -> None:
    stats = CommandStats(KNOWN)
    stats.observe("ping", 0.0001)
    stats.observe("look", 0.2)
    stats.observe("say", 0.02)
    stats.observe("say", 0.01)
    assert [op.op for op in stats.slowest(2)] == ["look", "say"]
    assert [op.op for op in stats.slowest(10)] == ["look", "say", "ping"]


def test_the_registry_is_asked_when_an_op_is_first_seen() -> None:
    known: set[str] = set()
    stats = CommandStats(known)
    stats.observe("roll", 0.001)
    known.add("roll")  # the game registers it later
    stats.observe("roll", 0.001)
    assert by_op(stats) == {UNKNOWN: (1, {}), "roll": (1, {})}


@given(
    st.lists(
        st.tuples(
            st.text(max_size=8),
            st.floats(min_value=0, max_value=100),
            st.none() | st.sampled_from([*ErrorCode, "made_up"]),
        ),
        max_size=200,
    )
)
def test_whatever_clients_send_the_labels_stay_bounded(
    commands: list[tuple[str, float, str | None]],
) -> None:
    stats = CommandStats(KNOWN | {"a", "b", "c"}, max_ops=4)
    for op, seconds, error in commands:
        stats.observe(op, seconds, error)
    ops = stats.snapshot()
    assert len(ops) <= 5
    assert {op.op for op in ops} <= KNOWN | {"a", "b", "c", UNKNOWN}
    assert {code for op in ops for code in op.errors} <= {*ErrorCode, UNKNOWN}
    assert sum(op.count for op in ops) == len(commands)
    assert all(op.buckets[-1] == op.count for op in ops)
    assert all(list(op.buckets) == sorted(op.buckets) for op in ops)
