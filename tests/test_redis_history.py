"""Room and channel history in Redis (backplane/redis_history.py): one numbering per topic
across nodes, kept within its bounds, an epoch that outlives a node, resumes answered from it,
and nothing read back trusted. Real RedisBackplanes on a real redis-server, each with a node
that records what it is given to deliver, and a wall clock the test moves by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from mudgate.backplane.base import Presence
from mudgate.backplane.history import (
    ENTRY_OVERHEAD_BYTES,
    EPOCH_CHANGED,
    OFFSET_AHEAD,
    TOO_OLD,
    UNAVAILABLE,
    Recovery,
)
from mudgate.backplane.redis import RedisBackplane
from mudgate.backplane.redis_history import RedisHistory
from mudgate.backplane.topic import Topic, room_topic
from mudgate.backplane.wire import stamp
from mudgate.hub import Hub
from mudgate.protocol import Outgoing, encode_event

from .conftest import FakeClock, RecordingConnection, make_settings
from .redis_server import RedisServer, free_port

HALL = room_topic("hall")
META = "mudgate:history:meta:room:hall"
STREAM = "mudgate:history:stream:room:hall"


class RecordingNode:
    """A hub reduced to what it is given to deliver."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Topic, Outgoing]] = []

    def deliver(self, topic: Topic, message: Outgoing) -> None:
        self.delivered.append((topic, message))

    def evict(self, player_id: str, count: int) -> None:
        pass

    def presence(self) -> dict[str, Presence]:
        return {}

    def status(self) -> dict[str, Any]:
        return {"name": "test", "connections": 0, "players": 0}

    def offsets(self, topic: Topic = HALL) -> list[int]:
        return [message.offset for seen, message in self.delivered if seen == topic]

    async def received(self, count: int) -> list[Outgoing]:
        """The first ``count`` messages delivered (waiting for them, a short while at most)."""
        async with asyncio.timeout(5):
            while len(self.delivered) < count:
                await asyncio.sleep(0.005)
        return [message for _, message in self.delivered[:count]]


class Node:
    def __init__(self, backplane: RedisBackplane, node: RecordingNode) -> None:
        self.backplane = backplane
        self.node = node


Start = Callable[..., Awaitable[Node]]


@pytest.fixture
def wall_clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
async def start(redis_server: RedisServer, wall_clock: FakeClock) -> AsyncIterator[Start]:
    """Start a node (a RedisBackplane and the node it delivers to), subscribed to ``topics``;
    each is closed after the test."""
    started: list[RedisBackplane] = []

    async def start(*topics: Topic, **overrides: Any) -> Node:
        settings = make_settings(**{"backplane": redis_server.url, **overrides})
        backplane = RedisBackplane(settings, node_id=f"node{len(started)}", wall_clock=wall_clock)
        started.append(backplane)
        node = RecordingNode()
        await backplane.start(node, dict)
        for topic in topics:
            backplane.subscribe(topic)
        await backplane.settled()
        return Node(backplane, node)

    yield start
    for backplane in started:
        async with asyncio.timeout(10):
            await backplane.close()


def say(text: str, room: str = "hall") -> Outgoing:
    return encode_event("say", {"room": room, "text": text})


async def keep(node: Node, topic: Topic, *texts: str) -> None:
    """Publish ``texts`` to be kept, and wait until Redis has numbered them."""
    kept = node.backplane.stats().history_kept
    for text in texts:
        node.backplane.publish_kept(topic, say(text, topic.partition(":")[2]))
    async with asyncio.timeout(5):
        while node.backplane.stats().history_kept < kept + len(texts):
            await asyncio.sleep(0.005)


async def ask(node: Node, offset: int, epoch: str, topic: Topic = HALL) -> Recovery:
    """What ``node`` answers a resume of ``topic`` after ``offset`` in ``epoch``."""
    recovery = await node.backplane.recover(topic, offset, epoch)
    assert recovery is not None, "Redis can be asked"
    return recovery


def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, socket_timeout=5)


# One numbering across nodes


async def test_two_nodes_number_a_topics_events_in_one_sequence_that_both_deliver(
    start: Start,
) -> None:
    a, b = await start(HALL), await start(HALL)
    for round_ in range(3):
        a.backplane.publish_kept(HALL, say(f"a{round_}"))
        b.backplane.publish_kept(HALL, say(f"b{round_}"))
    seen_a, seen_b = await a.node.received(6), await b.node.received(6)
    # Each node delivers every event, its own included, from Redis: in offset order.
    assert a.node.offsets() == b.node.offsets() == [1, 2, 3, 4, 5, 6]
    epochs = {message.epoch for message in seen_a + seen_b}
    assert len(epochs) == 1
    (epoch,) = epochs
    assert len(epoch) == 8
    assert int(epoch, 16) >= 0
    for mine, theirs in zip(seen_a, seen_b, strict=True):
        assert mine.data == theirs.data
        assert mine.topic == HALL
        assert mine.event == "say"
        event = json.loads(mine.data)
        assert list(event)[-2:] == ["offset", "epoch"]
        assert (event["offset"], event["epoch"]) == (mine.offset, epoch)
        # As wire.stamp writes it: the same bytes as the event published, plus the position.
        unstamped = encode_event("say", {"room": "hall", "text": event["text"]}).data
        assert mine.data == stamp(unstamped, mine.offset, epoch)
    stats = a.backplane.stats()
    assert (stats.history_kept, stats.history_dropped, stats.received) == (3, 0, 3)


async def test_a_node_that_subscribes_and_publishes_at_once_delivers_its_own_event(
    start: Start,
) -> None:
    a = await start()
    for number in range(20):  # a player enters a new room and speaks in the same breath
        topic = room_topic(f"room{number}")
        a.backplane.subscribe(topic)
        a.backplane.publish_kept(topic, say("hello", f"room{number}"))
    delivered = await a.node.received(20)
    assert [message.offset for message in delivered] == [1] * 20
    assert a.backplane.stats().history_dropped == 0


async def test_a_node_busy_writing_still_hears_its_own_first_event_in_a_new_room(
    start: Start,
) -> None:
    a = await start()
    for _ in range(2000):  # several round trips of writes nobody here listens to
        a.backplane.publish_kept(room_topic("busy"), say("x", "busy"))
    for number in range(20):
        await asyncio.sleep(0)  # the writer is on its way with what was queued before
        topic = room_topic(f"room{number}")
        a.backplane.subscribe(topic)
        a.backplane.publish_kept(topic, say("hello", f"room{number}"))
    delivered = await a.node.received(20)
    assert [message.offset for message in delivered] == [1] * 20


async def test_a_topic_nobody_listens_to_here_is_still_numbered_and_kept(start: Start) -> None:
    a = await start()
    await keep(a, HALL, "one", "two")
    assert a.node.delivered == []
    recovery = await ask(a, 0, "")
    assert recovery.offset == 2


async def test_the_epoch_survives_a_nodes_restart(start: Start, redis_server: RedisServer) -> None:
    a = await start(HALL)
    await keep(a, HALL, "before")
    (before,) = await a.node.received(1)
    await a.backplane.close()
    again = await start(HALL)  # the same Redis, a new process
    await keep(again, HALL, "after")
    (after,) = await again.node.received(1)
    assert (after.offset, after.epoch) == (2, before.epoch)
    recovery = await ask(again, 1, before.epoch)
    assert recovery.recovered
    assert [message.data for message in recovery.messages] == [after.data]


# Resumes


async def test_a_resume_gets_the_events_after_its_offset_exactly_as_they_were_sent(
    start: Start,
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "one", "two", "three", "four")
    live = await a.node.received(4)
    epoch = live[0].epoch
    recovery = await ask(a, 1, epoch)
    assert (recovery.recovered, recovery.offset, recovery.epoch, recovery.reason) == (
        True,
        4,
        epoch,
        None,
    )
    assert [(m.offset, m.epoch, m.topic, m.data) for m in recovery.messages] == [
        (m.offset, m.epoch, m.topic, m.data) for m in live[1:]
    ]


async def test_a_resume_at_the_latest_offset_is_recovered_with_nothing_to_replay(
    start: Start,
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "one", "two")
    epoch = (await a.node.received(1))[0].epoch
    recovery = await ask(a, 2, epoch)
    assert (recovery.recovered, recovery.offset, list(recovery.messages)) == (True, 2, [])


async def test_a_resume_in_another_epoch_or_from_the_future_is_not_recovered(
    start: Start,
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "one", "two")
    epoch = (await a.node.received(1))[0].epoch
    changed = await ask(a, 1, "0badc0de")
    ahead = await ask(a, 3, epoch)
    assert (changed.recovered, changed.reason, changed.epoch, changed.offset) == (
        False,
        EPOCH_CHANGED,
        epoch,
        2,
    )
    assert (ahead.recovered, ahead.reason, ahead.offset) == (False, OFFSET_AHEAD, 2)
    # An offset no stream ID can hold is "from the future" too, not a Redis error.
    huge = await ask(a, 10**30, epoch)
    assert huge.reason == OFFSET_AHEAD


async def test_a_topic_that_never_spoke_knows_only_nothing_yet(start: Start) -> None:
    a = await start()
    fresh = await ask(a, 0, "")
    gone = await ask(a, 5, "0badc0de")
    assert (fresh.recovered, fresh.reason) == (True, None)
    assert (gone.recovered, gone.reason) == (False, UNAVAILABLE)


async def test_a_node_that_cannot_reach_redis_keeps_no_history_and_cannot_be_asked(
    start: Start,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    a = await start(HALL, backplane=nowhere, backplane_timeout=0.2)
    assert not a.backplane.keeps_history
    assert await a.backplane.recover(HALL, 0, "") is None
    # Published all the same (the hub only asks while Redis keeps history: a race), it
    # reaches this node's players, without an offset.
    message = say("alone")
    a.backplane.publish_kept(HALL, message)
    assert a.node.delivered == [(HALL, message)]
    assert message.offset == 0
    assert a.backplane.stats().history_dropped == 1


async def test_history_switched_off_is_not_kept_in_redis(start: Start) -> None:
    a = await start(HALL, room_history_size=0)
    assert not a.backplane.keeps_history
    on = await start(HALL)
    assert on.backplane.keeps_history


# Bounds


async def test_a_topic_keeps_at_most_its_size_in_events(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL, room_history_size=3)
    await keep(a, HALL, *(f"line {n}" for n in range(1, 8)))
    epoch = (await a.node.received(1))[0].epoch
    with client(redis_server) as redis:
        assert [entry_id for entry_id, _ in redis.xrange(STREAM)] == [b"5-0", b"6-0", b"7-0"]
    recovered = await ask(a, 4, epoch)
    too_old = await ask(a, 3, epoch)
    assert [message.offset for message in recovered.messages] == [5, 6, 7]
    assert (too_old.recovered, too_old.reason, too_old.offset) == (False, TOO_OLD, 7)


async def test_a_topic_keeps_at_most_its_bytes_and_counts_them_exactly(
    start: Start, redis_server: RedisServer
) -> None:
    cap = 1000
    a = await start(HALL, room_history_topic_bytes=cap)
    await keep(a, HALL, *("x" * 200 for _ in range(10)))
    with client(redis_server) as redis:
        entries = redis.xrange(STREAM)
        kept_bytes = sum(len(fields[b"d"]) + ENTRY_OVERHEAD_BYTES for _, fields in entries)
        assert int(redis.hget(META, "bytes")) == kept_bytes <= cap
        assert len(entries) == cap // (len(entries[0][1][b"d"]) + ENTRY_OVERHEAD_BYTES)
        assert int(redis.get("mudgate:history:index:bytes")) == kept_bytes
    assert a.node.offsets()[-1] == 10  # numbered all the same


async def test_events_past_their_age_are_not_replayed_nor_kept(
    start: Start, redis_server: RedisServer, wall_clock: FakeClock
) -> None:
    a = await start(HALL, room_history_ttl=60)
    await keep(a, HALL, "old")
    epoch = (await a.node.received(1))[0].epoch
    wall_clock.advance(61)
    # Not replayed once past its age, even before anything trims it.
    too_old = await ask(a, 0, epoch)
    assert (too_old.recovered, too_old.reason) == (False, TOO_OLD)
    # The next event lets it go; the position stays.
    await keep(a, HALL, "new")
    with client(redis_server) as redis:
        assert [entry_id for entry_id, _ in redis.xrange(STREAM)] == [b"2-0"]
        assert 0 < redis.pttl(STREAM) <= 60_000
    recovery = await ask(a, 1, epoch)
    assert [m.offset for m in recovery.messages] == [2]


async def test_a_quiet_topics_position_outlives_its_events(
    start: Start, redis_server: RedisServer, wall_clock: FakeClock
) -> None:
    a = await start(HALL, room_history_ttl=60)
    await keep(a, HALL, "one", "two")
    epoch = (await a.node.received(1))[0].epoch
    wall_clock.advance(3600)  # quiet for an hour: its events are gone
    await keep(a, room_topic("kitchen"), "elsewhere")
    with client(redis_server) as redis:
        assert not redis.exists(STREAM)
        assert 86_000_000 < redis.pttl(META) <= 86_400_000
    # Someone who heard everything before it fell quiet resumes with nothing lost.
    recovery = await ask(a, 2, epoch)
    assert (recovery.recovered, recovery.offset) == (True, 2)
    await keep(a, HALL, "three")
    assert a.node.delivered[-1][1].offset == 3


async def test_past_max_topics_the_least_recently_spoken_topics_are_forgotten(
    start: Start, redis_server: RedisServer, wall_clock: FakeClock
) -> None:
    a = await start(HALL, room_history_max_topics=2)
    await keep(a, HALL, "first")
    epoch = (await a.node.received(1))[0].epoch
    for room in ("kitchen", "cellar"):
        wall_clock.advance(1)
        await keep(a, room_topic(room), "later")
    with client(redis_server) as redis:
        assert not redis.exists(META, STREAM)
        assert sorted(redis.zrange("mudgate:history:index:topics", 0, -1)) == [
            b"room:cellar",
            b"room:kitchen",
        ]
    forgotten = await ask(a, 1, epoch)
    assert (forgotten.recovered, forgotten.reason) == (
        False,
        UNAVAILABLE,
    )
    await keep(a, HALL, "again")  # a new epoch, from 1
    assert a.node.delivered[-1][1].offset == 1
    assert a.node.delivered[-1][1].epoch != epoch


async def test_past_max_bytes_the_least_recently_spoken_topics_lose_their_events_first(
    start: Start, redis_server: RedisServer, wall_clock: FakeClock
) -> None:
    a = await start(HALL, room_history_max_bytes=2000)
    await keep(a, HALL, *("x" * 300 for _ in range(3)))
    epoch = (await a.node.received(1))[0].epoch
    wall_clock.advance(1)
    kitchen = room_topic("kitchen")
    await keep(a, kitchen, *("y" * 300 for _ in range(2)))
    with client(redis_server) as redis:
        assert redis.xlen("mudgate:history:stream:room:kitchen") == 2
        assert not redis.exists(STREAM)  # the hall spoke least recently
        assert int(redis.get("mudgate:history:index:bytes")) <= 2000
    # The hall keeps its position: a player who heard all of it still resumes.
    recovery = await ask(a, 3, epoch)
    lost = await ask(a, 1, epoch)
    assert recovery.recovered
    assert lost.reason == TOO_OLD
    # One topic alone past the cap loses its own oldest events.
    await keep(a, kitchen, *("y" * 300 for _ in range(6)))
    with client(redis_server) as redis:
        assert 0 < redis.xlen("mudgate:history:stream:room:kitchen") < 8
        assert int(redis.get("mudgate:history:index:bytes")) <= 2000


async def test_monitoring_reads_what_all_nodes_keep_in_redis(start: Start) -> None:
    a = await start(HALL, presence_refresh=0.05)
    await keep(a, HALL, "one", "two")
    await keep(a, room_topic("kitchen"), "three")
    async with asyncio.timeout(5):
        while a.backplane.stats().history_topics != 2:
            await asyncio.sleep(0.01)
    stats = a.backplane.stats()
    assert stats.history_bytes > 3 * ENTRY_OVERHEAD_BYTES
    assert {"backplane_history_kept", "backplane_history_dropped"} <= set(stats.as_dict())


# What Redis did not number


async def test_a_kept_event_the_full_queue_drops_still_reaches_this_nodes_players(
    start: Start,
) -> None:
    a = await start(HALL, backplane_queue_size=2)
    messages = [say(f"line {n}") for n in range(5)]
    for message in messages:  # in one tick: the queue holds the last two
        a.backplane.publish_kept(HALL, message)
    delivered = await a.node.received(5)
    dropped = [m for m in delivered if m.offset == 0]
    assert dropped == messages[:3]  # as they were, without an offset
    assert [m.offset for m in delivered if m.offset] == [1, 2]
    assert a.backplane.stats().history_dropped == 3


async def test_kept_events_on_their_way_when_redis_goes_away_reach_this_nodes_players_once(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "before")
    messages = [say(f"line {n}") for n in range(3)]
    for message in messages:
        a.backplane.publish_kept(HALL, message)
    redis_server.stop()  # before the writer's turn: queued, or on their way, never seen back
    async with asyncio.timeout(5):
        while a.backplane.keeps_history or len(a.node.delivered) < 4:
            await asyncio.sleep(0.005)
    assert [message for _, message in a.node.delivered[1:]] == messages
    assert a.backplane.stats().history_dropped == 3


async def test_a_kept_event_redis_refuses_reaches_every_node_without_an_offset(
    start: Start, redis_server: RedisServer
) -> None:
    a, b = await start(HALL), await start(HALL)
    with client(redis_server) as redis:
        redis.script_flush()  # NOSCRIPT for the keep script from now on
    message = say("refused")
    a.backplane.publish_kept(HALL, message)
    assert (await a.node.received(1))[0] is message
    (elsewhere,) = await b.node.received(1)
    assert (elsewhere.data, elsewhere.offset) == (message.data, 0)
    assert a.backplane.stats().history_dropped == 1
    assert a.backplane.problem is not None
    assert "history" in a.backplane.problem


# Nothing read from Redis is trusted


def kept_payload(origin: str, sequence: str, offset: str, epoch: str, data: bytes) -> bytes:
    return b"\n".join(
        (b"k" + origin.encode(), *(s.encode() for s in (sequence, offset, epoch)), b"say", data)
    )


async def test_kept_messages_no_node_wrote_are_skipped_and_counted(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL, room_topic("lobby"))
    a.backplane.subscribe(Topic("player:bob"))
    await a.backplane.settled()
    good = stamp(b'{"type":"event","event":"say","text":"hi"}', 7, "abcd1234")
    hostile = [
        kept_payload("mallory", "1", "0", "abcd1234", stamp(b'{"a":1}', 0, "abcd1234")),
        kept_payload("mallory", "1", "-3", "abcd1234", good),
        kept_payload("mallory", "1", "7", "ABCD", good),  # not lowercase hex
        kept_payload("mallory", "1", "7", "abcd1234" * 3, good),  # too long
        kept_payload("mallory", "x", "7", "abcd1234", good),
        kept_payload("mallory", "1", "8", "abcd1234", good),  # says 8, carries 7
        kept_payload("mallory", "1", "7", "abcd1234", b'{"offset":7,"epoch":"abcd1234"'),
        kept_payload("mallory", "1", "7", "abcd1234", b"[1," + good[1:]),
        kept_payload("mallory", "1", "7", "abcd1234", b"x" * 300_000 + good),
        b"kmallory\n1\n7",
    ]
    with client(redis_server) as redis:
        for payload in hostile:
            redis.publish("mudgate:room:hall", payload)
        redis.publish("mudgate:player:bob", kept_payload("mallory", "1", "7", "abcd1234", good))
        redis.publish("mudgate:room:lobby", kept_payload("mallory", "1", "7", "abcd1234", good))
    (delivered,) = await a.node.received(1)
    assert (a.node.delivered[0][0], delivered.offset, delivered.data) == (
        room_topic("lobby"),
        7,
        good,
    )
    async with asyncio.timeout(5):
        while a.backplane.stats().invalid < len(hostile) + 1:
            await asyncio.sleep(0.005)
    assert len(a.node.delivered) == 1


async def test_a_position_no_node_wrote_starts_a_new_epoch(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL)
    for planted in (
        lambda r: r.set(META, "not a hash"),
        lambda r: r.hset(META, mapping={"epoch": "<script>", "latest": "5"}),
        lambda r: r.hset(META, mapping={"epoch": "abcd", "latest": "-1"}),
        lambda r: r.hset(META, mapping={"epoch": "abcd", "latest": "1.5"}),
    ):
        with client(redis_server) as redis:
            redis.delete(META, STREAM)
            planted(redis)
            before = len(a.node.delivered)
            await keep(a, HALL, "hello")
            message = a.node.delivered[before][1]
            assert message.offset == 1
            assert message.epoch not in ("<script>", "abcd")
            assert redis.hget(META, "epoch") == message.epoch.encode()


async def test_a_stream_no_node_wrote_is_replaced_not_obeyed(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "one")
    with client(redis_server) as redis:
        redis.xadd(STREAM, {"t": "1", "e": "say", "d": "{}"}, id="99-0")  # past the position
        await keep(a, HALL, "two")
        assert [entry_id for entry_id, _ in redis.xrange(STREAM)] == [b"2-0"]
        redis.delete(STREAM)
        redis.set(STREAM, "a string")
        redis.set("mudgate:history:index:bytes", "lots")
        redis.set("mudgate:history:index:speaking", "not a zset")
        await keep(a, HALL, "three")
        assert redis.type(STREAM) == b"stream"
    assert a.node.offsets() == [1, 2, 3]


async def test_stream_entries_no_node_wrote_are_not_replayed(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL)
    await keep(a, HALL, "one", "two", "three", "four")
    epoch = (await a.node.received(1))[0].epoch
    with client(redis_server) as redis:
        # The second entry's data no longer carries its own position.
        entries = redis.xrange(STREAM)
        redis.delete(STREAM)
        for entry_id, fields in entries:
            if entry_id == b"2-0":
                fields[b"d"] = b'{"type":"event","event":"say"}'
            redis.xadd(STREAM, fields, id=entry_id)
    invalid = a.backplane.stats().invalid
    broken = await ask(a, 1, epoch)
    after = await ask(a, 2, epoch)
    assert (broken.recovered, broken.reason) == (False, TOO_OLD)
    assert [m.offset for m in after.messages] == [3, 4]
    assert a.backplane.stats().invalid == invalid + 1
    with client(redis_server) as redis:  # a gap: what follows it cannot be replayed alone
        redis.xdel(STREAM, b"3-0")
    gap = await ask(a, 2, epoch)
    assert gap.reason == TOO_OLD


async def test_a_position_of_the_wrong_type_answers_a_resume_as_unknown(
    start: Start, redis_server: RedisServer
) -> None:
    a = await start(HALL)
    with client(redis_server) as redis:
        redis.set(META, "not a hash")
        redis.set(STREAM, "nor a stream")
    recovery = await ask(a, 3, "abcd1234")
    assert recovery.reason == UNAVAILABLE
    assert a.backplane.stats().invalid == 1


# The unconfirmed: what this node published and has not seen back


def history(lost: list[tuple[Topic, Outgoing, bool]], listening: set[Topic]) -> RedisHistory:
    kept = RedisHistory(
        make_settings(backplane="redis://127.0.0.1:1/0"),
        "node0",
        lost=lambda topic, message, refused: lost.append((topic, message, refused)),
        listening=listening.__contains__,
        wall_clock=lambda: 1_800_000_000.0,
    )
    kept.sha = "0" * 40
    return kept


def test_what_was_not_seen_back_when_the_connection_is_lost_is_delivered_here_in_order() -> None:
    lost: list[tuple[Topic, Outgoing, bool]] = []
    kept = history(lost, {HALL})
    messages = [say(str(n)) for n in range(4)]
    commands = [kept.keep(HALL, "mudgate:room:hall", message) for message in messages]
    kept.echoed(2)  # the first two came back (the second confirms the first)
    assert len(kept) == 2
    kept.lost()
    assert [message for _, message, _ in lost] == messages[2:]
    assert kept.dropped == 2
    for command in commands:  # the queue dropping them afterwards delivers nothing twice
        assert command is not None
        kept.dropped_command(command)
    assert len(lost) == 2


def test_a_kept_event_for_a_topic_this_node_does_not_listen_to_is_confirmed_by_its_answer() -> None:
    lost: list[tuple[Topic, Outgoing, bool]] = []
    kept = history(lost, set())
    command = kept.keep(HALL, "mudgate:room:hall", say("nobody here"))
    assert kept.answered(command, 1)
    assert (len(kept), kept.kept) == (0, 1)
    assert not kept.answered(("EVALSHA", "f" * 40, 0), 1)  # another script's
    assert not kept.answered(("PUBLISH", "c", b"x"), 1)


# Direct deliveries: behind the kept events this node published before them


async def test_a_direct_delivery_follows_the_kept_events_before_it_as_they_come_back() -> None:
    made: list[str] = []
    kept = history([], {HALL})
    kept.after_kept(lambda: made.append("at once"))  # nothing on its way
    for text in ("one", "two"):
        kept.keep(HALL, "mudgate:room:hall", say(text))
    kept.after_kept(lambda: made.append("narrate"))
    kept.echoed(1)
    assert (made, kept.waiting) == (["at once"], 1)
    kept.echoed(2)
    assert (made, kept.waiting, kept.unordered) == (["at once", "narrate"], 0, 0)


async def test_direct_deliveries_follow_the_kept_events_given_up_between_them() -> None:
    delivered: list[Any] = []
    kept = history(delivered, {HALL})
    first, second = say("one"), say("two")
    command = kept.keep(HALL, "mudgate:room:hall", first)
    kept.after_kept(lambda: delivered.append("after one"))
    kept.keep(HALL, "mudgate:room:hall", second)
    kept.after_kept(lambda: delivered.append("after two"))
    assert command is not None
    kept.dropped_command(command)  # the queue dropped the first: delivered here, unnumbered
    assert delivered == [(HALL, first, False), "after one"]
    kept.lost()  # the connection is gone before the second came back
    assert delivered == [(HALL, first, False), "after one", (HALL, second, False), "after two"]


async def test_a_direct_delivery_behind_an_event_nobody_here_hears_waits_for_its_answer() -> None:
    made: list[str] = []
    kept = history([], set())
    command = kept.keep(HALL, "mudgate:room:hall", say("nobody here"))
    kept.after_kept(lambda: made.append("reply"))
    assert made == []
    kept.answered(command, 1)
    assert made == ["reply"]


async def test_a_nodes_direct_delivery_reaches_its_players_after_its_kept_event(
    start: Start,
) -> None:
    a = await start(HALL)
    event, narrate = say("the bard sings"), say("you hum along")
    a.backplane.publish_kept(HALL, event)
    a.backplane.after_kept(lambda: a.node.deliver(Topic("player:alice"), narrate))
    assert a.backplane.stats().order_waiting == 1
    first, second = await a.node.received(2)
    assert (first.offset, second) == (1, narrate)
    stats = a.backplane.stats()
    assert (stats.order_waiting, stats.order_unordered) == (0, 0)


async def test_closing_the_backplane_makes_every_delivery_still_waiting(start: Start) -> None:
    a = await start(HALL)
    made: list[str] = []
    a.backplane.publish_kept(HALL, say("last words"))
    a.backplane.after_kept(lambda: made.append("reply"))
    await a.backplane.close()
    assert made == ["reply"]
    assert a.backplane.stats().order_waiting == 0


def _room_offsets(conn: RecordingConnection, room: str = "hall") -> list[tuple[str, int]]:
    found = []
    for message in conn.written:
        event = json.loads(message.data)
        if event.get("type") == "event" and event.get("room") == room and "offset" in event:
            found.append((event["event"], event["offset"]))
    return found


async def test_a_resume_while_this_nodes_pub_sub_lags_gets_each_event_once(
    redis_server: RedisServer,
) -> None:
    """The subscriber connection runs behind the command connection that reads the history:
    events numbered before the read still arrive live after it, and are not sent twice."""
    settings = make_settings(
        backplane=redis_server.url,
        room_history_size=10_000,
        room_history_topic_bytes=10_000_000,
        room_history_max_bytes=20_000_000,
        outbox_max_messages=100_000,
        outbox_max_bytes=50_000_000,
        player_message_burst=1000,
    )
    a, b = Hub(settings), Hub(settings)
    await a.start()
    await b.start()
    try:
        watcher = RecordingConnection("watcher", "1", a.limits, clock=a.clock)
        a.connect(watcher)
        a.move_player("watcher", "hall")
        cat = RecordingConnection("cat", "2", b.limits, clock=b.clock)
        b.connect(cat)
        b.move_player("cat", "hall")
        await a.backplane.settled()
        await b.backplane.settled()
        received = a.backplane._received  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        # Each published message is handled 30 ms after it was read: a pub/sub backlog.
        a.backplane._received = lambda channel, payload: loop.call_later(  # type: ignore[attr-defined]
            0.03, received, channel, payload
        )
        stop = asyncio.Event()

        async def chatter() -> None:
            n = 0
            while not stop.is_set():
                b.room_event("hall", "say", player="cat", text=f"t{n}")
                n += 1
                await asyncio.sleep(0.002)

        talking = asyncio.create_task(chatter())
        await _until(lambda: len(_room_offsets(watcher)) > 5)
        for _ in range(2):
            last = _room_offsets(watcher)[-1][1]
            epoch = json.loads(watcher.written[-1].data)["epoch"]
            a.absentees.left("bob", "hall")  # bob left from the hall a moment ago
            bob = RecordingConnection("bob", "3", a.limits, clock=a.clock)
            session = a.session(bob, f"room:hall:{last}:{epoch}")
            await session.__aenter__()
            await asyncio.sleep(0.16)  # the lagging backlog drains (no await can say when)
            got = [offset for event, offset in _room_offsets(bob) if event != "resumed"]
            resumed = [json.loads(m.data) for m in bob.written if b'"resumed"' in m.data]
            assert resumed[0]["recovered"] is True
            assert got == list(range(last + 1, last + 1 + len(got))), got
            assert len(got) > resumed[0]["missed"]  # live ones followed the replay
            await session.__aexit__(None, None, None)
        stop.set()
        await talking
        a.disconnect(watcher)
        b.disconnect(cat)
    finally:
        await a.close(timeout_seconds=0.5)
        await b.close(timeout_seconds=0.5)


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.005)
