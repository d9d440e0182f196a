"""Through Redis: what waits there for players who are away is capped like the node's own, and
nothing read from Redis is trusted. Real ``mudgate serve`` nodes, a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import redis

from ..e2e.clients import Player
from ..redis_server import RedisServer
from .gateway import Gateway, poll

TEXT = "x" * 4000


def node(
    gateway: Callable[..., Gateway], redis_server: RedisServer, name: str, **settings: object
) -> Gateway:
    return gateway(
        backplane=redis_server.url,
        node_name=name,
        presence_refresh=0.3,
        presence_ttl=5,
        player_messages_per_second=10000,
        player_message_burst=10000,
        **settings,
    )


async def test_pending_tells_in_redis_stay_under_the_byte_cap(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    cap = 200_000
    a = node(gateway, redis_server, "a", max_pending_bytes=cap, max_pending_per_sender=10_000)
    b = node(gateway, redis_server, "b", max_pending_bytes=cap, max_pending_per_sender=10_000)
    async with await Player.connect(a.ws("bob")) as bob:  # seen on node a, then away
        await bob.next("welcome")
    with redis_server.client() as client:
        before = int(client.info("memory")["used_memory"])
    async with await Player.connect(b.ws("griefer")) as griefer:
        await griefer.next("welcome")
        codes = []
        for i in range(500):  # 2 MB of tells, ten times the cap
            await griefer.send(op="tell", to="bob", text=TEXT, id=i)
            answer = await griefer.next("told", "error")
            codes.append(answer.get("code", "told"))
    told = codes.count("told")
    assert 40 <= told <= cap // len(TEXT)  # each tell is its text and ~100 bytes around it
    assert codes == ["told"] * told + ["mailbox_full"] * (500 - told)
    with redis_server.client() as client:
        assert int(client.get("mudgate:pending:meta:total")) <= cap
        assert int(client.info("memory")["used_memory"]) - before < 2 * 1024 * 1024
    # Monitoring shows what waits in Redis, on every node.
    memory = await poll(
        lambda: (m := a.memory())["data_structures"]["backplane_pending_players"] == 1 and m
    )
    assert 0 < memory["data_structures"]["backplane_pending_bytes"] <= cap
    # Bob, back on the other node, gets what was queued; the accounting empties.
    async with await Player.connect(b.ws("bob")) as bob:
        await bob.next("welcome")
        assert (await bob.next("tell"))["text"] == TEXT
    with redis_server.client() as client:
        assert int(client.get("mudgate:pending:meta:total") or 0) == 0
        assert client.zcard("mudgate:pending:meta:expiry") == 0


async def test_a_griefer_cannot_fill_everyones_mailbox_in_redis(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    a = node(gateway, redis_server, "a", max_pending_per_sender=5)
    b = node(gateway, redis_server, "b", max_pending_per_sender=5)
    for away in ("bob", "carol"):
        async with await Player.connect(a.ws(away)) as player:
            await player.next("welcome")
    async with (
        await Player.connect(b.ws("griefer")) as griefer,
        await Player.connect(b.ws("alice")) as alice,
    ):
        for i in range(5):
            await griefer.send(op="tell", to="bob", text=f"spam {i}")
            await griefer.next("told")
        await griefer.send(op="tell", to="carol", text="more")
        assert (await griefer.next("error"))["code"] == "mailbox_full"
        await alice.send(op="tell", to="carol", text="hello carol")
        await alice.next("told")
    async with await Player.connect(a.ws("carol")) as carol:
        await carol.next("welcome")
        assert (await carol.next("tell"))["text"] == "hello carol"


async def test_garbage_in_redis_reaches_no_player_and_breaks_no_endpoint(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    a = node(gateway, redis_server, "a")
    with redis.Redis.from_url(redis_server.url) as client:
        # A node summary of the wrong shape, a node key and a player field that are not
        # UTF-8, a presence record that is not one.
        client.set("mudgate:node:bogus", b"{}", px=60_000)
        client.set(b"mudgate:node:\xff\xfe", b'{"node": "x"}', px=60_000)
        client.set("mudgate:node:liar", b"[1, 2, 3]", px=60_000)
        client.hset("mudgate:players:bogus", mapping={b"\xff\xfe": b'["lobby", [1.0]]'})
        client.hset("mudgate:players:liar", mapping={"mallory": b'{"room": 5}'})
        client.pexpire("mudgate:players:bogus", 60_000)
    async with (
        await Player.connect(a.ws("alice")) as alice,
        await Player.connect(a.ws("bob")) as bob,
        httpx.AsyncClient(base_url=a.url) as http,
    ):
        await alice.next("welcome")
        await bob.next("welcome")
        cluster = await http.get("/monitoring/cluster")
        assert cluster.status_code == 200
        assert [n["name"] for n in cluster.json()["nodes"]] == ["a"]
        await alice.send(op="who")
        assert (await alice.next("who"))["players"] == ["alice", "bob"]
        await alice.send(op="look")
        assert (await alice.next("room"))["occupants"] == ["alice", "bob"]
        # Not events, or bigger than an outbox: never relayed to the room.
        with redis_server.client() as client:
            client.publish("mudgate:room:lobby", "mother\nsay\nnot json at all")
            client.publish(
                "mudgate:room:lobby", "mother\nsay\n" + '{"type":"event"}' + " " * 300_000
            )
            client.publish("mudgate:room:lobby", "mother\nsay\n[1, 2]")
            client.publish(
                "mudgate:room:lobby", 'mother\nsay\n{"type":"event","event":"say","text":"ok"}'
            )
        assert (await bob.next("say"))["text"] == "ok"
        metrics = (await http.get("/metrics")).text
    assert "mudgate_backplane_invalid_total" in metrics
    invalid = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("mudgate_backplane_invalid_total")
    )
    assert invalid >= 3 + 3  # the three bad records read (at least once each), three payloads
    warnings = [r for r in a.records() if r["event"].startswith("ignored a record in Redis")]
    assert 1 <= len(warnings) <= 4  # once per kind, not once per record
    assert not [r for r in a.records() if r["level"] == "error"]


async def seen_in_redis(redis_server: RedisServer, players: list[str]) -> None:
    """Wait until a node has written that ``players`` left (a tell to them is then queued)."""
    wanted = [f"mudgate:seen:{player}" for player in players]
    await poll(lambda: set(wanted) <= set(redis_server.mudgate_keys("mudgate:seen:*")))


def every_pending_key_expires(redis_server: RedisServer) -> bool:
    with redis_server.client() as client:
        return all(client.pttl(key) > 0 for key in client.keys("mudgate:pending*"))


@pytest.mark.parametrize("name", ["expiry", "bytes", "senders", "total"])
async def test_a_player_named_like_the_mailboxs_accounting_breaks_no_other_tell(
    gateway: Callable[..., Gateway], redis_server: RedisServer, name: str
) -> None:
    a = node(gateway, redis_server, "a")
    b = node(gateway, redis_server, "b")
    # Told in this order: the name first, while the mailbox is still empty, then players named
    # like the parts of the mailbox's own keys, then anyone.
    away = [name, "meta", "queue", "pending", "bob"]
    for player in away:
        async with await Player.connect(a.ws(player)) as left:
            await left.next("welcome")
    await seen_in_redis(redis_server, away)
    async with await Player.connect(b.ws("alice")) as alice:
        await alice.next("welcome")
        answers = {}
        for player in away:
            await alice.send(op="tell", to=player, text=f"for {player}")
            answers[player] = (await alice.next("told", "error")).get("code", "told")
    assert answers == dict.fromkeys(away, "told")
    assert b.get("/health/ready")["status"] == "ready"
    assert every_pending_key_expires(redis_server)
    for player in away:
        async with await Player.connect(b.ws(player)) as back:
            await back.next("welcome")
            assert (await back.next("tell"))["text"] == f"for {player}"
    with redis_server.client() as client:
        assert int(client.get("mudgate:pending:meta:total") or 0) == 0


def planted_tell(sender: str, to: str, text: str) -> bytes:
    """A tell as the previous version queued it: ``<sender>\\n<event>\\n<data>``."""
    data = {"type": "event", "event": "tell", "from": sender, "to": to, "text": text, "seq": 1}
    return f"{sender}\ntell\n{json.dumps(data)}".encode()


async def test_an_upgraded_node_delivers_what_the_previous_version_left_queued_once(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    # Redis as the previous version (every key under mudgate:pending:) left it: bob's queue
    # from the game, with its accounting, and a tell from alice to a player named `senders`
    # that made a list of the senders hash, without a TTL, breaking every later tell. Her
    # tell to dave then failed half-way, at the senders hash, after its push and before any
    # TTL: his queue has none (Redis keeps what a failing script wrote before).
    ttl_ms = 3_600_000
    for_bob = planted_tell("", "bob", "queued before the upgrade")
    for_senders = planted_tell("alice", "senders", "the tell that broke it")
    for_dave = planted_tell("alice", "dave", "queued without a TTL")
    with redis_server.client() as client:
        deadline = int(client.time()[0]) * 1000 + ttl_ms
        client.rpush("mudgate:pending:bob", for_bob)
        client.zadd("mudgate:pending:expiry", {"bob": deadline, "senders": deadline})
        client.hset(
            "mudgate:pending:bytes", mapping={"bob": len(for_bob), "senders": len(for_senders)}
        )
        client.set("mudgate:pending:total", len(for_bob))
        for key in ("mudgate:pending:bob", "mudgate:pending:bytes", "mudgate:pending:total"):
            client.pexpire(key, 2 * ttl_ms)
        client.rpush("mudgate:pending:senders", for_senders)
        client.rpush("mudgate:pending:dave", for_dave)
        client.zadd("mudgate:pending:expiry", {"dave": deadline})
        client.hset("mudgate:pending:bytes", "dave", len(for_dave))
        assert client.pttl("mudgate:pending:dave") == -1
        # Another game's keys share the Redis: the walk takes several SCAN steps, and leaves
        # them alone.
        client.mset({f"othergame:pending:{i}": b"theirs" for i in range(5000)})
    a = node(gateway, redis_server, "a")
    b = node(gateway, redis_server, "b")
    # What the previous version left without a TTL now has one: its accounting, and the
    # queue of a player who may never come back.
    await poll(lambda: every_pending_key_expires(redis_server))
    with redis_server.client() as client:
        assert 0 < client.pttl("mudgate:pending:dave") <= 2 * ttl_ms
        assert 0 < client.pttl("mudgate:pending:senders") <= 2 * ttl_ms
        assert client.pttl("othergame:pending:0") == client.pttl("othergame:pending:4999") == -1
    # Tells from this version work beside what the previous one left.
    async with await Player.connect(a.ws("carol")) as carol:
        await carol.next("welcome")
    await seen_in_redis(redis_server, ["carol"])
    async with await Player.connect(b.ws("alice")) as alice:
        await alice.next("welcome")
        await alice.send(op="tell", to="carol", text="after the upgrade")
        await alice.next("told")
    # Each gets what waited for them, from either version; the previous version's queues are
    # gone (so taken once) and its accounting no longer counts them.
    for player, text in (
        ("bob", "queued before the upgrade"),
        ("senders", "the tell that broke it"),
        ("dave", "queued without a TTL"),
        ("carol", "after the upgrade"),
    ):
        async with await Player.connect(b.ws(player)) as back:
            await back.next("welcome")
            assert (await back.next("tell"))["text"] == text
            await back.send(op="ping", id=1)
            assert (await back.next("tell", "pong"))["event"] == "pong"  # that tell only
    # Coming back again, nobody is told it twice.
    async with await Player.connect(a.ws("dave")) as again:
        await again.next("welcome")
        await again.send(op="ping", id=2)
        assert (await again.next("tell", "pong"))["event"] == "pong"
    with redis_server.client() as client:
        assert not client.exists(
            "mudgate:pending:bob", "mudgate:pending:senders", "mudgate:pending:dave"
        )
        assert client.zcard("mudgate:pending:expiry") == 0
        assert int(client.get("mudgate:pending:total") or 0) == 0
    assert every_pending_key_expires(redis_server)


async def test_a_mailbox_redis_refuses_makes_the_node_degraded_and_alerts_once(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    a = node(gateway, redis_server, "a", check_interval=0.1)
    async with await Player.connect(a.ws("bob")) as bob:
        await bob.next("welcome")
    await seen_in_redis(redis_server, ["bob"])
    # A key of the wrong type where the mailbox keeps its accounting (where this version
    # keeps it, and where the previous one did): every script that touches it fails.
    planted = ("mudgate:pending:meta:expiry", "mudgate:pending:expiry")
    with redis_server.client() as client:
        for key in planted:
            client.set(key, "not a sorted set")
    async with (
        await Player.connect(a.ws("alice")) as alice,
        httpx.AsyncClient(base_url=a.url) as http,
    ):
        await alice.next("welcome")
        for i in range(20):
            await alice.send(op="tell", to="bob", text=f"meanwhile {i}", id=i)
            # Bob left this node: it keeps the tell itself, as it would without Redis.
            await alice.next("told")
        ready = (await http.get("/health/ready")).json()
        assert ready["status"] == "degraded"
        assert "mailbox" in ready["detail"]
        alerts = (await http.get("/monitoring/memory-alerts")).json()
        assert any("mailbox" in alert for alert in alerts["alerts"])
        # The node is still part of the cluster: only the mailbox fails.
        assert (await http.get("/monitoring/cluster")).json()["reachable"] is True

        # Once the mailbox works again (each of its operations: a send, a take, a lease
        # renewal's count), so does the node, and the alert resolves.
        with redis_server.client() as client:
            client.delete(*planted)
        await alice.send(op="tell", to="bob", text="kept")
        await alice.next("told")
        async with await Player.connect(a.ws("bob")) as bob:
            await bob.next("welcome")
            texts = [(await bob.next("tell"))["text"] for _ in range(21)]
            assert texts == [f"meanwhile {i}" for i in range(20)] + ["kept"]
        await poll(lambda: a.get("/health/ready")["status"] == "ready")
        assert (await http.get("/monitoring/memory-alerts")).json()["alert_count"] == 0
    failures = [r for r in a.records() if "mailbox" in r["event"] and r["level"] == "error"]
    assert len(failures) == 1  # logged once, not once per tell
    assert not [r for r in a.records() if r["level"] == "warning"]
    assert [r for r in a.records() if "mailbox" in r["event"] and r["level"] == "info"]
