"""Resume across nodes: Redis numbers and keeps each room's events for the whole cluster, so a
player who comes back on another node, or after every node restarted, gets what they missed
exactly once, with the offsets everyone else saw."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from ..conftest import make_settings
from ..redis_server import RedisServer
from .clients import Player
from .server import RunningServer, running_server
from .test_resume import drain, position, said


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Any]:
    """Start nodes on ``redis_server``: ``nodes(2)`` gives two servers, stopped after the test
    (or by the test: ``stop(node)``)."""
    contexts: list[Any] = []

    def start(count: int, **overrides: Any) -> list[RunningServer]:
        started = []
        for _ in range(count):
            settings = make_settings(
                backplane=redis_server.url, node_name=f"node{len(contexts)}", **overrides
            )
            context = running_server(settings)
            contexts.append(context)
            started.append(context.__enter__())
        return started

    yield start
    for context in reversed(contexts):
        context.__exit__(None, None, None)


async def test_a_player_who_comes_back_on_another_node_gets_what_was_said_exactly_once(
    nodes: Any,
) -> None:
    a, b = nodes(2)
    async with await Player.connect(a.ws("bob")) as bob:
        await bob.next("welcome")
        await bob.send(op="go", room="hall")
        await bob.next("room")
        async with await Player.connect(b.ws("cat")) as cat:
            await cat.next("welcome")
            await cat.send(op="go", room="hall")
            await cat.next("room")
            await cat.send(op="say", text="before")
            last = await bob.next("say")
            await bob.close()
            for n in range(5):
                await cat.send(op="say", text=f"missed {n}")
            heard = await said(cat, 6)
            # Every node numbers the room alike: cat (node b) saw what bob (node a) saw.
            assert (heard[0]["offset"], heard[0]["epoch"]) == (last["offset"], last["epoch"])
            url = f"{b.ws('bob')}&resume={quote(position(last))}"
            async with await Player.connect(url) as again:
                welcome = await again.next("welcome")
                seen = await drain(again)
                await cat.send(op="say", text="live")
                live = await again.next("say")
    assert welcome["room"] == "hall"
    replayed = [event for event in seen if event.get("event") == "say"]
    assert [event["text"] for event in replayed] == [f"missed {n}" for n in range(5)]
    assert [(e["offset"], e["epoch"]) for e in replayed] == [
        (e["offset"], e["epoch"]) for e in heard[1:]
    ]
    resumed = seen[-1]
    assert (resumed["recovered"], resumed["reason"], resumed["epoch"]) == (
        True,
        None,
        last["epoch"],
    )
    assert live["offset"] == resumed["offset"] + 1
    assert a.stats()["backplane_history_kept"] + b.stats()["backplane_history_kept"] > 6
    assert b.stats()["backplane_history_dropped"] == 0


async def test_a_player_resumes_with_nothing_lost_after_every_node_restarted(
    redis_server: RedisServer,
) -> None:
    settings = make_settings(backplane=redis_server.url, node_name="only")
    with running_server(settings) as node:
        async with await Player.connect(node.ws("dee")) as dee:
            await dee.next("welcome")
            await dee.send(op="say", text="before the restart")
            last = await dee.next("say")
    with running_server(settings) as node:  # the same Redis: the epoch lives there
        async with await Player.connect(node.ws("eve")) as eve:
            await eve.next("welcome")
            await eve.send(op="say", text="while dee was away")
            missed = await eve.next("say")
        async with await Player.connect(f"{node.ws('dee')}&resume={quote(position(last))}") as dee:
            await dee.next("welcome")
            seen = await drain(dee)
    assert (missed["offset"], missed["epoch"]) == (last["offset"] + 1, last["epoch"])
    texts = [event["text"] for event in seen if event.get("event") == "say"]
    assert texts == ["while dee was away"]
    assert seen[-1]["recovered"] is True
