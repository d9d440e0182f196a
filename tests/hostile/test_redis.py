"""Through Redis: what waits there for players who are away is capped like the node's own, and
nothing read from Redis is trusted. Real ``mudgate serve`` nodes, a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import httpx
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
        assert int(client.get("mudgate:pending:total")) <= cap
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
        assert int(client.get("mudgate:pending:total") or 0) == 0
        assert client.zcard("mudgate:pending:expiry") == 0


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
