"""The hub's structures: the way in, the one way out, rooms, channels and pending messages."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import pytest

from mudgate.backplane.topic import channel_topic, room_topic
from mudgate.connection import ConnectionState
from mudgate.hub import LOBBY, Delivery, Hub, Player
from mudgate.protocol import CloseCode

from .conftest import FakeClock, RecordingConnection, connect, make_settings, settle
from .redis_server import RedisServer

STRUCTURES = (
    "active_websockets",
    "active_sse",
    "player_websockets",
    "connection_timestamps",
    "online_players",
    "room_occupants",
    "room_subscriptions",
)


def payload(message: object) -> dict[str, object]:
    return json.loads(message.data)  # type: ignore[attr-defined,no-any-return]


async def test_connect_registers_the_player_in_the_lobby(hub: Hub) -> None:
    conn = connect(hub, "alice")
    assert hub.registry.websockets == {conn.id: conn}
    assert hub.registry.players["alice"].room == LOBBY
    assert hub.topics.occupants == {LOBBY: {"alice"}}
    assert hub.topics.topic_listeners == {"room:lobby": {"alice"}}
    await settle()
    assert conn.events() == ["welcome"]


async def test_disconnect_removes_every_reference(hub: Hub) -> None:
    conn = connect(hub, "alice")
    hub.subscribe(hub.registry.players["alice"], "ooc")
    hub.move(hub.registry.players["alice"], "tavern")
    ref = weakref.ref(conn)
    hub.disconnect(conn)
    hub.disconnect(conn)  # idempotent
    stats = hub.stats().as_dict()
    assert all(stats[name] == 0 for name in STRUCTURES)
    assert "alice" in hub.absentees.last_seen
    await settle()  # the cancelled writer task lets go of the connection
    del conn
    gc.collect()
    assert ref() is None


async def test_second_connection_shares_the_player(hub: Hub) -> None:
    first = connect(hub, "alice")
    second = connect(hub, "alice")
    assert hub.registry.player_connections["alice"] == [first, second]
    hub.disconnect(first)
    assert "alice" in hub.registry.players
    hub.disconnect(second)
    assert "alice" not in hub.registry.players


async def test_connections_past_the_per_player_cap_close_the_oldest(hub: Hub) -> None:
    cap = hub.settings.max_connections_per_player
    conns = [connect(hub, "alice") for _ in range(cap + 1)]
    assert hub.registry.player_connections["alice"] == conns[1:]
    assert conns[0].close_code is CloseCode.REPLACED
    assert conns[0].id not in hub.registry.websockets
    await settle()
    assert conns[0].closed_with == (CloseCode.REPLACED, "replaced")


async def test_broadcast_reaches_the_room_once_encoded(hub: Hub) -> None:
    alice, bob, carol = connect(hub, "alice"), connect(hub, "bob"), connect(hub, "carol")
    hub.move(hub.registry.players["carol"], "tavern")
    await settle()
    hub.room_event(LOBBY, "say", text="hi")
    await settle()
    message = alice.written[-1]
    assert payload(message)["text"] == "hi"
    assert bob.written[-1] is message
    assert message not in carol.written


async def test_moving_tells_both_rooms_and_drops_empty_ones(hub: Hub) -> None:
    alice, bob = connect(hub, "alice"), connect(hub, "bob")
    hub.move(hub.registry.players["alice"], "tavern")
    await settle()
    assert payload(bob.written[-1])["event"] == "depart"
    arrived = payload(alice.written[-1])
    assert arrived | {"ts": 0, "seq": 0, "epoch": ""} == {
        "type": "event",
        "event": "arrive",
        "room": "tavern",
        "player": "alice",
        "ts": 0,
        "seq": 0,
        "offset": 1,  # the room's first event
        "epoch": "",
    }
    hub.move(hub.registry.players["alice"], LOBBY)
    assert "tavern" not in hub.topics.occupants
    assert "room:tavern" not in hub.topics.topic_listeners


async def test_channels_are_capped_per_player(hub: Hub) -> None:
    alice = connect(hub, "alice")
    player = hub.registry.players["alice"]
    cap = hub.settings.max_subscriptions_per_player
    assert all(hub.subscribe(player, f"c{i}") for i in range(cap))
    assert hub.subscribe(player, "c0")  # already subscribed
    assert not hub.subscribe(player, "one-more")
    assert hub.unsubscribe(player, "c0")
    assert not hub.unsubscribe(player, "c0")
    hub.disconnect(alice)
    assert hub.topics.topic_listeners == {}


async def test_pending_messages_are_delivered_in_order_on_reconnect(hub: Hub) -> None:
    hub.disconnect(connect(hub, "alice"))
    for i in range(3):
        assert hub.send("alice", hub.event("tell", text=str(i))) is Delivery.QUEUED
    conn = connect(hub, "alice")
    await settle()
    assert [payload(m).get("text") for m in conn.written] == [None, "0", "1", "2"]
    assert len(hub.absentees.pending_messages) == 0


async def test_a_connection_hears_its_welcome_then_its_backlog_then_what_hooks_sent(
    hub: Hub,
) -> None:
    hub.hooks.on_connect(lambda player_id: hub.send(player_id, "narrate", text="The gate opens."))
    hub.disconnect(connect(hub, "alice"))
    hub.send("alice", "tell", text="while you were out")
    alice = RecordingConnection("alice", "127.0.0.1", hub.limits)
    async with hub.session(alice):
        await settle()
    assert alice.events() == ["welcome", "tell", "narrate"]


async def enter(hub: Hub, player_id: str) -> tuple[RecordingConnection, asyncio.Task[Player]]:
    """A connection of ``player_id`` entering ``hub``, stopped where it waits for the cluster
    (its registration is synchronous, the settling waits for Redis)."""
    conn = RecordingConnection(player_id, "127.0.0.1", hub.limits, clock=hub.clock)
    entering = asyncio.create_task(hub.session(conn).__aenter__())
    await asyncio.sleep(0)
    assert conn.state is ConnectionState.OPENING
    return conn, entering


async def test_in_a_cluster_what_reaches_a_connection_while_it_settles_follows_its_welcome(
    redis_server: RedisServer,
) -> None:
    hub = Hub(make_settings(backplane=redis_server.url))
    await hub.start()
    assert hub.backplane.clustered
    try:
        first, entering = await enter(hub, "alice")
        hub.send("alice", "narrate", text="The gate opens.")
        await entering
        second, entering = await enter(hub, "alice")  # alice is online: a second connection
        hub.room_event(LOBBY, "weather", text="rain")
        hub.send("alice", "narrate", text="The bard sings.")
        await settle()
        assert second.written == []  # held while it settles
        await entering
        await settle()
        assert second.events() == ["welcome", "weather", "narrate"]
        assert first.events() == ["welcome", "narrate", "weather", "narrate"]
    finally:
        for conn in hub.connections_of("alice"):
            hub.disconnect(conn)
        await hub.close()


async def test_in_a_cluster_a_commands_reply_follows_the_room_event_it_made(
    redis_server: RedisServer,
) -> None:
    hub = Hub(make_settings(backplane=redis_server.url))
    await hub.start()
    try:
        conn = connect(hub, "alice")
        await hub.backplane.settled()
        hub.room_event(LOBBY, "arrive", player="alice")  # back from Redis, a round trip later
        hub.reply(conn, hub.event("room", room=LOBBY))
        async with asyncio.timeout(5):
            while len(conn.events()) < 3:
                await asyncio.sleep(0.005)
        assert conn.events() == ["welcome", "arrive", "room"]
    finally:
        hub.disconnect(conn)
        await hub.close()


async def test_on_one_process_a_reply_is_written_at_once(hub: Hub) -> None:
    conn = connect(hub, "alice")
    hub.reply(conn, hub.event("pong"))
    await settle()
    assert conn.events() == ["welcome", "pong"]


async def test_one_process_holds_every_lease_a_game_asks_for(hub: Hub) -> None:
    assert await hub.hold_lease("bard", 30)
    assert await hub.hold_lease("bard", 30)


async def test_pending_messages_are_capped_and_expire(clock: FakeClock) -> None:
    hub = Hub(make_settings(max_pending_messages=2, pending_message_ttl=60), clock=clock)
    await hub.start()
    hub.disconnect(connect(hub, "alice"))
    for i in range(3):
        hub.send("alice", hub.event("tell", text=str(i)))
    assert hub.stats().pending_message_entries == 2
    clock.advance(60)
    assert hub.absentees.pending_messages.expire() == 2
    assert hub.stats().pending_messages == 0
    assert hub.stats().pending_message_bytes == 0


async def test_messages_to_unknown_players_are_refused(hub: Hub) -> None:
    assert hub.send("nobody", hub.event("tell", text="x")) is Delivery.UNKNOWN_PLAYER
    assert len(hub.absentees.pending_messages) == 0


async def test_last_seen_forgets_after_its_ttl(clock: FakeClock) -> None:
    hub = Hub(make_settings(last_seen_ttl=10), clock=clock)
    await hub.start()
    hub.disconnect(connect(hub, "alice"))
    clock.advance(10)
    late = hub.event("tell", text="late")
    assert hub.send("alice", late) is Delivery.UNKNOWN_PLAYER
    assert hub.absentees.last_seen.expire() == 1


async def test_admit_rate_limits_per_ip_and_per_player(clock: FakeClock) -> None:
    hub = Hub(make_settings(max_rate_limit_entries=2, connection_attempt_ttl=60), clock=clock)
    assert hub.admit("alice", "10.0.0.1") is None
    assert hub.admit("alice", "10.0.0.2") is None
    refusal = hub.admit("alice", "10.0.0.3")
    assert refusal is not None
    assert refusal.code is CloseCode.RATE_LIMITED
    assert hub.admit("bob", "10.0.0.4") is None
    assert hub.admit("carol", "10.0.0.4") is None
    assert hub.admit("dave", "10.0.0.4") is not None
    clock.advance(120)  # two windows on
    assert hub.admit("alice", "10.0.0.3") is None
    assert hub.stats().refused_connections == 2


async def test_admit_refuses_past_the_connection_and_player_caps() -> None:
    hub = Hub(make_settings(max_connections=2, max_players=1))
    await hub.start()
    connect(hub, "alice")
    refusal = hub.admit("bob", "10.0.0.1")
    assert refusal is not None
    assert refusal.code is CloseCode.TRY_AGAIN_LATER
    assert hub.admit("alice", "10.0.0.1") is None
    connect(hub, "alice")
    refusal = hub.admit("alice", "10.0.0.1")
    assert refusal is not None
    assert refusal.reason == "server full"


async def test_close_says_going_away_to_everyone(hub: Hub) -> None:
    conns = [connect(hub, name) for name in ("alice", "bob")]
    await hub.close(timeout_seconds=0.05)
    assert [conn.closed_with for conn in conns] == [(CloseCode.GOING_AWAY, "going away")] * 2
    assert hub.stats().total_connections == 0


async def test_pending_messages_are_capped_in_total_bytes(clock: FakeClock) -> None:
    hub = Hub(make_settings(max_pending_bytes=1200), clock=clock)
    await hub.start()
    for name in ("alice", "bob"):
        hub.disconnect(connect(hub, name))
    messages = [hub.event("tell", text=f"{i}" * 300) for i in range(4)]
    deliveries = [
        hub.send("bob" if i % 2 else "alice", message) for i, message in enumerate(messages)
    ]
    # Four messages of ~370 bytes do not fit in 1200: the last is refused, nothing queued goes.
    assert deliveries == [Delivery.QUEUED] * 3 + [Delivery.MAILBOX_FULL]
    assert hub.absentees.pending_messages.size_bytes <= 1200
    assert hub.stats().pending_message_entries == 3
    assert hub.stats().pending_messages_refused == 1
    conn = connect(hub, "alice")
    await settle()
    assert messages[0] in conn.written
    assert messages[2] in conn.written


async def test_outside_the_hub_its_structures_can_only_be_read(hub: Hub) -> None:
    # Each part is the only writer of its structures; everyone else gets a read-only view.
    connect(hub, "alice")
    views = [
        hub.registry.websockets,
        hub.registry.sse,
        hub.registry.opened_at,
        hub.registry.player_connections,
        hub.registry.players,
        hub.topics.occupants,
        hub.topics.topic_listeners,
    ]
    for view in views:
        with pytest.raises(TypeError):
            view["intruder"] = None  # type: ignore[index]
    assert hub.stats().structures()["online_players"] == 1


@pytest.mark.parametrize(
    ("send", "named"),
    [
        (lambda hub: hub.room_event("hall", "weather", room="elsewhere"), "'room'"),
        (lambda hub: hub.channel_event("ooc", "chat", channel="x"), "'channel'"),
        (lambda hub: hub.event("weather", ts=1), "'ts'"),
        (lambda hub: hub.event("weather", seq=1), "'seq'"),
        (lambda hub: hub.room_event("hall", "weather", type="storm"), "'type'"),
        (lambda hub: hub.send("alice", "narrate", event="x"), "'event'"),
    ],
)
async def test_a_field_the_hub_sets_itself_is_refused_by_name(
    hub: Hub, send: Any, named: str
) -> None:
    alice = connect(hub, "alice")
    with pytest.raises(ValueError, match=f"the hub sets {named} itself"):
        send(hub)
    await settle()
    assert alice.events() == ["welcome"]  # nothing half-sent


async def test_a_game_field_named_like_a_parameter_is_just_a_field(hub: Hub) -> None:
    alice = connect(hub, "alice")
    hub.room_event(LOBBY, "narrate", event_name="x", player_id="bob", sender_note="y")
    await settle()
    sent = payload(alice.written[-1])
    assert (sent["room"], sent["player_id"], sent["event"]) == (LOBBY, "bob", "narrate")


# Resume


def chatted(hub: Hub, channel: str, count: int) -> str:
    """``count`` chat events said on ``channel``; its epoch."""
    for n in range(count):
        hub.channel_event(channel, "chat", text=f"{channel} {n}")
    return hub.history.next(channel_topic(channel))[1]


async def test_a_topic_named_twice_in_a_resume_is_read_once(hub: Hub) -> None:
    epoch = chatted(hub, "ooc", 3)
    amy = RecordingConnection("amy", "127.0.0.1", hub.limits, clock=hub.clock)
    async with hub.session(amy, f"channel:ooc:1:{epoch},channel:ooc:1:{epoch}"):
        await settle()
    sent = [payload(message) for message in amy.written]
    assert [body["text"] for body in sent if body.get("event") == "chat"] == ["ooc 1", "ooc 2"]
    assert [body.get("event") for body in sent].count("resumed") == 1
    errors = [body for body in sent if body["type"] == "error"]
    assert [error["code"] for error in errors] == ["forbidden_topic"]
    assert "named twice" in str(errors[0]["message"])
    assert (hub.resumes, hub.replayed) == (1, 2)


@pytest.mark.parametrize(
    "cap", [{"outbox_max_messages": 20}, {"outbox_max_bytes": 4000}], ids=["messages", "bytes"]
)
async def test_a_resume_leaves_room_in_the_outbox_for_every_resumed_event(
    clock: FakeClock, cap: dict[str, int]
) -> None:
    hub = Hub(make_settings(**cap), clock=clock)
    await hub.start()
    epochs = {"big": chatted(hub, "big", 15)}
    epochs |= {f"c{n}": chatted(hub, f"c{n}", 1) for n in range(10)}
    amy = RecordingConnection("amy", "127.0.0.1", hub.limits, clock=hub.clock)
    async with hub.session(amy, ",".join(f"channel:{c}:0:{e}" for c, e in epochs.items())):
        assert amy.outbox_messages < hub.limits.outbox_max_messages
        assert amy.outbox_bytes < hub.limits.outbox_max_bytes
        hub.channel_event("c9", "chat", text="live")  # one more, before amy reads a thing
        assert amy.closed_with is None
        await settle()
    resumed = [payload(message) for message in amy.written if message.event == "resumed"]
    assert [body["channel"] for body in resumed] == list(epochs)
    assert resumed[0]["reason"] == "too_much"  # 15 and 11 resumed events would not fit
    replayed = [body["missed"] for body in resumed[1:]]
    assert replayed == sorted(replayed, reverse=True)  # first come, first replayed
    assert sum(replayed) == hub.replayed > 0
    assert [body["reason"] for body in resumed if not body["recovered"]] == ["too_much"] * (
        11 - sum(replayed)
    )


async def opened_with(hub: Hub, player_id: str, resume: str) -> RecordingConnection:
    conn = RecordingConnection(player_id, "127.0.0.1", hub.limits, clock=hub.clock)
    await hub.session(conn, resume).__aenter__()
    await settle()
    return conn


def sent_to(conn: RecordingConnection) -> list[dict[str, Any]]:
    return [json.loads(message.data) for message in conn.written]


async def test_a_resume_not_recovered_says_no_more_than_what_follows_it() -> None:
    # The room kept 2 events of 6; a greeting the game says as the player returns (held
    # while the resume is read) must not be at or below the offset the resumed event gives.
    hub = Hub(make_settings(room_history_size=2))
    await hub.start()
    hub.room_event("hall", "say", text="old")
    epoch = hub.history.position(room_topic("hall"))
    assert epoch is not None
    for n in range(5):
        hub.room_event("hall", "say", text=f"x{n}")
    hub.absentees.left("bob", "hall")
    hub.hooks.on_connect(lambda player: hub.room_event("hall", "say", text=f"{player} wakes"))
    conn = await opened_with(hub, "bob", f"room:hall:1:{epoch[1]}")
    seen = [message for message in sent_to(conn) if message["type"] == "event"]
    resumed = next(message for message in seen if message["event"] == "resumed")
    assert resumed["recovered"] is False
    later = seen[seen.index(resumed) + 1 :]
    assert [message["text"] for message in later if message["event"] == "say"] == ["bob wakes"]
    assert all(message["offset"] > resumed["offset"] for message in later if "offset" in message)


async def test_a_resume_past_the_players_rate_is_told_lost_not_left_silent() -> None:
    hub = Hub(make_settings(player_message_burst=2))
    await hub.start()
    positions = []
    for name in ("a", "b", "c"):
        hub.channel_event(name, "chat", text=f"{name} seen")
        offset, epoch = hub.history.position(channel_topic(name)) or (0, "")
        positions.append(f"channel:{name}:{offset}:{epoch}")
        hub.channel_event(name, "chat", text=f"{name} missed")
    conn = await opened_with(hub, "bob", ",".join(positions))
    seen = sent_to(conn)
    resumed = {message["channel"]: message for message in seen if message.get("event") == "resumed"}
    assert resumed["a"]["recovered"] is True
    assert resumed["c"]["recovered"] is False
    assert resumed["c"]["reason"] == "rate_limited"
    errors = [message for message in seen if message["type"] == "error"]
    assert errors
    assert errors[0]["code"] == "rate_limited"
