"""Several mudgate nodes sharing rooms, direct messages and presence through a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from prometheus_client.parser import text_string_to_metric_families

from mudgate.backplane import Delivery

from ..conftest import SECRET_KEY, make_settings
from ..redis_server import RedisServer, free_port
from .clients import Player
from .server import RunningServer, running_server, wait_for
from .test_dashboard import ARTIFACTS


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Any]:
    """Start nodes on ``redis_server``: ``nodes(2, presence_ttl=1)`` gives two servers."""
    contexts: list[Any] = []

    def start(count: int, **overrides: Any) -> list[RunningServer]:
        started = []
        for index in range(count):
            settings = make_settings(
                backplane=redis_server.url,
                node_name=f"node{len(contexts)}",
                **overrides,
            )
            context = running_server(settings)
            contexts.append(context)
            started.append(context.__enter__())
            del index
        return started

    yield start
    for context in reversed(contexts):
        context.__exit__(None, None, None)


async def test_players_on_two_nodes_share_a_room_tells_and_who(nodes: Any) -> None:
    a, b = nodes(2)
    async with (
        await Player.connect(a.ws("alice")) as alice,
        await Player.connect(b.ws("bob")) as bob,
    ):
        await alice.next("welcome")
        await bob.next("welcome")

        await alice.send(op="say", text="hello from A")
        assert pick((await bob.next("say")), "from", "text") == {
            "from": "alice",
            "text": "hello from A",
        }
        # Published once, delivered once: alice hears herself once, from her own node.
        assert (await alice.next("say"))["text"] == "hello from A"

        await bob.send(op="tell", to="alice", text="psst")
        assert (await alice.next("tell"))["text"] == "psst"
        assert pick((await bob.next("told")), "to", "text") == {"to": "alice", "text": "psst"}

        for player in (alice, bob):
            await player.send(op="who")
            assert pick((await player.next("who")), "players", "count") == {
                "players": ["alice", "bob"],
                "count": 2,
            }

        await bob.send(op="go", room="tavern")
        assert (await bob.next("room"))["occupants"] == ["bob"]
        await alice.send(op="go", room="tavern")
        assert (await bob.next("arrive"))["player"] == "alice"
        room = await alice.next("room")
        assert room["occupants"] == ["alice", "bob"]
        assert room["occupant_count"] == 2

        # Channels reach across nodes too.
        for player in (alice, bob):
            await player.send(op="subscribe", channel="ooc")
            await player.next("subscribed")
        await wait_for(lambda: b.stats()["backplane_subscriptions"] >= 3)
        await alice.send(op="chat", channel="ooc", text="lfg")
        assert (await bob.next("chat"))["text"] == "lfg"

        # Unknown players are unknown in the whole cluster.
        await bob.send(op="tell", to="nobody", text="?")
        assert (await bob.next("error"))["code"] == "player_not_found"


async def test_a_node_subscribes_to_a_room_only_while_it_has_listeners(
    nodes: Any, redis_server: RedisServer
) -> None:
    (a,) = nodes(1)
    with redis_server.client() as client:

        def channels() -> list[str]:
            return sorted(client.pubsub_channels("mudgate:room:*"))

        async with await Player.connect(a.ws("alice")) as alice:
            await alice.next("welcome")
            await wait_for(lambda: channels() == ["mudgate:room:lobby"])
            await alice.send(op="go", room="tavern")
            await alice.next("room")
            await wait_for(lambda: channels() == ["mudgate:room:tavern"])
        await wait_for(lambda: channels() == [])
        assert a.stats()["backplane_subscriptions"] == 0


async def test_a_tell_waits_for_a_player_who_comes_back_to_another_node(nodes: Any) -> None:
    a, b = nodes(2)
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")
    await wait_for(lambda: a.stats()["online_players"] == 0)
    async with await Player.connect(a.ws("bob")) as bob:
        await bob.next("welcome")
        await bob.send(op="tell", to="alice", text="while you were out")
        await bob.next("told")
    async with await Player.connect(b.ws("alice")) as alice:
        assert (await alice.next("tell"))["text"] == "while you were out"


async def first_events(player: Player, count: int) -> list[dict[str, Any]]:
    """The first ``count`` messages ``player`` received, none skipped."""
    async with asyncio.timeout(5):
        return [await player.inbox.get() for _ in range(count)]


async def test_welcome_comes_first_then_the_backlog_then_what_the_game_sent(nodes: Any) -> None:
    a, b = nodes(2)

    def greet(player_id: str) -> None:  # the game's on_connect: it announces and narrates
        a.hub.room_event("lobby", "arrive", player=player_id)
        a.hub.send(player_id, "narrate", text="The gate creaks open.")

    a.call(lambda: a.hub.hooks.on_connect(greet))
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")
    await wait_for(lambda: a.stats()["online_players"] == 0)
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        await bob.send(op="tell", to="alice", text="while you were out")
        await bob.next("told")
    async with await Player.connect(a.ws("alice")) as alice:
        welcome, told, *rest = await first_events(alice, 4)
        assert pick(welcome, "event", "player", "room") == {
            "event": "welcome",
            "player": "alice",
            "room": "lobby",
        }
        assert pick(told, "event", "text") == {"event": "tell", "text": "while you were out"}
        assert [(event["event"], event.get("player")) for event in rest] == [
            ("arrive", "alice"),
            ("narrate", None),
        ]
        # The welcome was made before what the hooks sent, and says so in its seq.
        assert welcome["seq"] < rest[0]["seq"] < rest[1]["seq"]


async def test_a_nodes_room_events_and_messages_reach_a_player_in_the_order_the_game_made_them(
    nodes: Any,
) -> None:
    (a,) = nodes(1)
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")

        def play() -> None:  # kept room events go round Redis; a send to alice does not
            for n in range(5):
                a.hub.room_event("lobby", "weather", text=f"cloud {n}")
                a.hub.send("alice", "narrate", text=f"line {n}")

        a.call(play)
        made = await first_events(alice, 10)
        assert [(event["event"], event["text"]) for event in made] == [
            pair for n in range(5) for pair in (("weather", f"cloud {n}"), ("narrate", f"line {n}"))
        ]
        assert [event["offset"] for event in made if event["event"] == "weather"] == [1, 2, 3, 4, 5]
        async with httpx.AsyncClient(base_url=a.http_url) as client:
            text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mudgate_backplane_order_waiting"].samples[0].value == 0
    assert families["mudgate_backplane_order_unordered"].samples[0].value == 0  # none late


async def test_max_connections_per_player_holds_across_nodes(nodes: Any) -> None:
    a, b = nodes(2, max_connections_per_player=1)
    first = await Player.connect(a.ws("alice"))
    await first.next("welcome")
    async with await Player.connect(b.ws("alice")) as second:
        await second.next("welcome")
        assert await first.closed() == 4009
        await second.send(op="who")
        assert (await second.next("who"))["count"] == 1


async def test_the_cluster_view_lists_every_node(nodes: Any) -> None:
    a, b = nodes(2)
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        async with httpx.AsyncClient(base_url=a.http_url) as client:
            report = (await client.get("/monitoring/cluster")).json()
    assert report["backplane"] == "redis"
    assert report["reachable"] is True
    assert report["node"] == a.hub.backplane.node_id
    names = {node["name"]: node for node in report["nodes"]}
    assert set(names) == {"node0", "node1"}
    assert names["node0"]["memory"]["rss_mb"] > 0


def pick(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: message[key] for key in keys}


def _spawn_node(redis_url: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """A node in a process of its own, so it can be killed with SIGKILL."""
    environment = {
        **os.environ,
        "MUDGATE_BACKPLANE": redis_url,
        "MUDGATE_SECRET_KEY": SECRET_KEY,
        "MUDGATE_PORT": str(port),
        "MUDGATE_NODE_NAME": "doomed",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mudgate", "serve", "--log-level", "warning"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_killed_node_drops_out_of_who_within_the_lease(
    nodes: Any, redis_server: RedisServer
) -> None:
    ttl = 1.0
    (a,) = nodes(1, presence_ttl=ttl, presence_refresh=0.2)
    port = free_port()
    doomed = _spawn_node(
        redis_server.url, port, MUDGATE_PRESENCE_TTL=str(ttl), MUDGATE_PRESENCE_REFRESH="0.2"
    )
    try:
        async with httpx.AsyncClient() as client:
            await wait_for_http(client, f"http://127.0.0.1:{port}/health/live")
        url = f"ws://127.0.0.1:{port}/ws?token={a.token('carol')}"
        async with await Player.connect(a.ws("alice")) as alice:
            await alice.next("welcome")
            carol = await Player.connect(url)
            await carol.next("welcome")
            # Presence is written a moment after the welcome, by the other process.
            await who_until(alice, ["alice", "carol"])

            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
            killed_at = time.monotonic()
            await who_until(alice, ["alice"])
            # Within the lease, measured from the kill (and nobody cleaned up after it).
            assert time.monotonic() - killed_at <= ttl + 0.5
            await alice.send(op="look")
            assert (await alice.next("room"))["occupants"] == ["alice"]
            await carol.closed()
    finally:
        doomed.kill()
        doomed.wait(timeout=10)


async def who_until(player: Player, players: list[str], timeout: float = 10.0) -> None:
    """Ask ``who`` until it lists ``players``, a few times a second: asked as fast as it is
    answered, a player runs through their burst and is rate-limited (10 a second)."""
    async with asyncio.timeout(timeout):
        while True:
            await player.send(op="who")
            if (await player.next("who"))["players"] == players:
                return
            await asyncio.sleep(0.1)  # under the rate of 10 a second


async def wait_for_http(client: httpx.AsyncClient, url: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def test_redis_going_away_and_coming_back(nodes: Any, redis_server: RedisServer) -> None:
    a, b = nodes(2, check_interval=0.05, backplane_retry_max=0.2, backplane_timeout=0.5)
    async with (
        await Player.connect(a.ws("alice")) as alice,
        await Player.connect(a.ws("bob")) as bob,
        await Player.connect(b.ws("carol")) as carol,
        httpx.AsyncClient(base_url=a.http_url) as client,
    ):
        for player in (alice, bob, carol):
            await player.next("welcome")
        await alice.send(op="say", text="before")
        for player in (bob, carol):
            assert (await player.next("say"))["text"] == "before"

        redis_server.stop()
        await wait_for(lambda: not a.hub.backplane.clustered)
        # Local traffic flows; what was meant for B is dropped and counted, not buffered.
        dropped = a.stats()["backplane_dropped"]
        for text in ("during 1", "during 2"):
            await alice.send(op="say", text=text)
            assert (await bob.next("say"))["text"] == text
        assert a.stats()["backplane_dropped"] >= dropped + 2
        assert a.stats()["backplane_queue"] == 0
        ready = (await client.get("/health/ready")).json()
        assert ready["status"] == "degraded"
        assert "unreachable" in ready["detail"]
        await wait_for(lambda: "BACKPLANE_UNAVAILABLE:" in a.gateway.watch.tracker.active)
        await alice.send(op="who")
        assert (await alice.next("who"))["players"] == ["alice", "bob"]

        redis_server.start()
        await wait_for(lambda: a.hub.backplane.clustered and b.hub.backplane.clustered)
        await wait_for(lambda: not a.gateway.watch.tracker.active)
        assert a.gateway.watch.tracker.fired["BACKPLANE_UNAVAILABLE"] == 1
        assert (await client.get("/health/ready")).json()["status"] == "ready"
        # Subscriptions and presence were announced again.
        await alice.send(op="say", text="after")
        assert (await carol.next("say"))["text"] == "after"
        await carol.send(op="who")
        assert (await carol.next("who"))["count"] == 3
        # carol never heard what was said while Redis was away: it was dropped, not queued.
        assert all(m.get("event") != "say" for m in list(carol.inbox._queue))  # type: ignore[attr-defined]


async def test_a_node_starts_without_redis_and_joins_when_it_comes(
    server_with: Any,
) -> None:
    redis_server = RedisServer()  # not started yet: nothing listens on its port
    try:
        a = server_with(backplane=redis_server.url, backplane_retry_max=0.2, check_interval=0.05)
        async with (
            await Player.connect(a.ws("alice")) as alice,
            httpx.AsyncClient(base_url=a.http_url) as client,
        ):
            await alice.next("welcome")
            await alice.send(op="say", text="alone")
            assert (await alice.next("say"))["text"] == "alone"
            ready = (await client.get("/health/ready")).json()
            assert ready == {"status": "degraded", "detail": a.hub.backplane.problem}
            await wait_for(lambda: "BACKPLANE_UNAVAILABLE:" in a.gateway.watch.tracker.active)
            cluster = (await client.get("/monitoring/cluster")).json()
            assert cluster["reachable"] is False
            assert [node["name"] for node in cluster["nodes"]] == [a.settings.node_name]

            redis_server.start()
            await wait_for(lambda: a.hub.backplane.clustered)
            # alice, who connected while Redis was away, was announced when it came.
            with redis_server.client() as redis:
                players_key = f"mudgate:players:{a.hub.backplane.node_id}"
                await wait_for(lambda: redis.hkeys(players_key) == ["alice"])
    finally:
        redis_server.close()


async def test_redis_holds_nothing_but_leases_and_positions_once_everyone_has_left(
    nodes: Any, redis_server: RedisServer
) -> None:
    a, b = nodes(2, last_seen_ttl=0.3, pending_message_ttl=0.3, room_history_ttl=0.3)
    async with (
        await Player.connect(a.ws("alice")) as alice,
        await Player.connect(b.ws("bob")) as bob,
    ):
        await alice.next("welcome")
        await bob.next("welcome")
        await alice.send(op="go", room="tavern")
        await alice.send(op="subscribe", channel="ooc")
        await alice.send(op="say", text="hi")
        await bob.send(op="tell", to="alice", text="hi")
        await alice.next("tell")
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        await bob.send(op="tell", to="alice", text="queued for her")
        await bob.next("told")
    leases = sorted(f"mudgate:node:{node.hub.backplane.node_id}" for node in (a, b))
    await wait_for(lambda: a.stats()["online_players"] == 0 == b.stats()["online_players"])
    # Every key but the leases expires by itself: seen markers, the queued tell, the rooms'
    # events; the rooms' positions (epoch, latest offset) within a day, so that a player who
    # comes back to a quiet room resumes with nothing lost.
    for key in redis_server.mudgate_keys():
        assert key in leases or (0 < redis_server.client().pttl(key) <= 86_400_000), key
    positions = ["mudgate:history:index:topics"] + [
        f"mudgate:history:meta:{topic}" for topic in ("room:lobby", "room:tavern")
    ]
    await wait_for(lambda: redis_server.mudgate_keys() == sorted(leases + positions), timeout=5)


def test_stopping_a_node_withdraws_its_lease_at_once(redis_server: RedisServer) -> None:
    with running_server(make_settings(backplane=redis_server.url)) as server:
        node_key = f"mudgate:node:{server.hub.backplane.node_id}"
        assert redis_server.mudgate_keys() == [node_key]
        summary = json.loads(redis_server.client().get(node_key) or "{}")
        assert summary["node"] == server.hub.backplane.node_id
    assert redis_server.mudgate_keys() == []


async def test_metrics_count_the_backplane(nodes: Any) -> None:
    (a,) = nodes(1)
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")
        await alice.send(op="say", text="counted")
        await alice.next("say")
        async with httpx.AsyncClient(base_url=a.http_url) as client:
            text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mudgate_backplane_up"].samples[0].value == 1
    assert families["mudgate_backplane_subscriptions"].samples[0].value >= 2  # lobby, alice
    assert families["mudgate_backplane_published"].samples[0].value >= 1
    assert families["mudgate_backplane_dropped"].samples[0].value == 0


async def test_garbage_published_on_a_channel_is_ignored(
    nodes: Any, redis_server: RedisServer
) -> None:
    (a,) = nodes(1)
    async with (
        await Player.connect(a.ws("alice")) as alice,
        await Player.connect(a.ws("bob")) as bob,
    ):
        await alice.next("welcome")
        await bob.next("welcome")
        await wait_for(lambda: a.stats()["backplane_subscriptions"] >= 3)
        with redis_server.client() as client:
            for payload in (b"", b"x", b"mother\n\xff\xfe\n{}", b"e" + b"\n" * 3, b"z" * 100_000):
                client.publish("mudgate:room:lobby", payload)
                client.publish("mudgate:player:alice", payload)
            client.publish("mudgate:player:alice", f"eother\n{a.hub.backplane.node_id}\n-1")
        await wait_for(lambda: sum(a.hub.backplane.invalid.values()) >= 9)
        # The node is still connected, and alice still plays.
        assert a.hub.backplane.clustered
        assert a.stats()["backplane_reconnects"] == 0
        await bob.send(op="say", text="still here")
        assert (await alice.next("say"))["text"] == "still here"


async def test_the_dashboard_shows_the_cluster(nodes: Any, browser: Browser) -> None:
    a, b = nodes(2)
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        await page.goto(f"{a.http_url}/dashboard?every=200")
        cluster = page.locator("#cluster")
        await expect(cluster).to_be_visible()
        await expect(page.locator("#cluster-problem")).to_have_text("(2 nodes through Redis)")
        await expect(page.locator("#nodes tbody tr")).to_have_count(2)
        await expect(page.locator("#nodes")).to_contain_text("node0")
        await expect(page.locator("#nodes")).to_contain_text("node1")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-cluster.png"), full_page=True)


async def test_game_code_reaches_a_player_on_another_node(nodes: Any) -> None:
    a, b = nodes(2)
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        # An NPC on node A speaks to bob, who is on node B: routed, not waited for.
        assert a.call(lambda: a.hub.send("bob", "narrate", text="The bard waves.")) is (
            Delivery.ROUTED
        )
        assert (await bob.next("narrate"))["text"] == "The bard waves."
        a.call(lambda: a.hub.room_event("lobby", "narrate", text="A bell rings."))
        assert (await bob.next("narrate"))["text"] == "A bell rings."


async def test_a_timer_under_a_lease_acts_once_per_cluster(nodes: Any) -> None:
    a, b = nodes(2)

    async def tick(node: RunningServer, song: int) -> None:  # the bard's timer, on every node
        if await node.hub.hold_lease("bard", 60):
            node.hub.room_event("lobby", "narrate", speaker="bard", song=song)

    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")  # b listens to the lobby in Redis from here on
        for song in range(3):
            for node in (a, b):
                node.run(tick(node, song))
        # After every song from either node: b's are delivered at once, a's come through
        # Redis in the order a published them.
        a.call(lambda: a.hub.room_event("lobby", "narrate", song="end"))
        heard = []
        while (song := (await bob.next("narrate"))["song"]) != "end":
            heard.append(song)
        assert heard == [0, 1, 2]


async def test_the_write_queue_is_capped(nodes: Any) -> None:
    (a,) = nodes(1, backplane_queue_size=10)

    def burst() -> tuple[int, int]:
        before = a.hub.backplane.stats().dropped
        for _ in range(100):  # in one step of the loop: the writer cannot run meanwhile
            a.hub.room_event("nowhere", "narrate", text="x")
        stats = a.hub.backplane.stats()
        return stats.queue, stats.dropped - before

    queued, dropped = a.call(burst)
    assert queued == 10
    assert dropped == 90


@pytest.mark.slow
async def test_a_subscriber_connection_that_stops_answering_is_replaced(nodes: Any) -> None:
    (a,) = nodes(1, backplane_timeout=0.05)
    backplane = a.hub.backplane

    async def deafen_and_settle() -> None:
        async def ping_into_the_void(*args: object) -> None:
            pass  # the PING is never sent, so no PONG comes back

        assert backplane._pubsub is not None
        backplane._pubsub.ping = ping_into_the_void
        for _ in range(101):  # each waits backplane_timeout for a PONG that never comes
            await backplane.settled()

    a.run(deafen_and_settle())
    await wait_for(lambda: backplane.reconnects == 1 and backplane.clustered)
    assert len(backplane.subscriptions._pings) == 0
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")  # settled again on the new connection


async def test_a_lost_presence_write_is_made_good_at_the_next_renewal(
    nodes: Any, redis_server: RedisServer
) -> None:
    (a,) = nodes(1, presence_ttl=1.0, presence_refresh=0.2)
    players_key = f"mudgate:players:{a.hub.backplane.node_id}"
    async with await Player.connect(a.ws("alice")) as alice:
        await alice.next("welcome")
        with redis_server.client() as redis:
            # As if the HDEL of a player who left had been dropped by a full queue, and the
            # HSET of alice too.
            redis.hset(players_key, "ghost", '["lobby",[1.0]]')
            redis.hdel(players_key, "alice")
            await wait_for(lambda: redis.hkeys(players_key) == ["alice"], timeout=5)
