"""What one player sends is rate-limited, and what waits for others is shared fairly.
Each against a real ``mudgate serve`` with its default limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from ..e2e.clients import Player
from .floods import message_flood, posted_commands
from .gateway import Gateway, Healthy

FLOOD = 3000


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "say", "text": "spam"},
        {"op": "chat", "channel": "ooc", "text": "spam"},
        {"op": "tell", "to": "listener0", "text": "spam"},
    ],
    ids=["say", "chat", "tell"],
)
async def test_a_flooding_player_is_throttled_then_closed_and_nobody_else_suffers(
    gateway: Callable[..., Gateway], frame: dict[str, str]
) -> None:
    server = gateway()
    listeners = [await Player.connect(server.ws(f"listener{i}")) for i in range(5)]
    for listener in listeners:
        await listener.send(op="subscribe", channel="ooc")
        await listener.next("subscribed")
    griefer = await Player.connect(server.ws("griefer"))
    await griefer.send(op="subscribe", channel="ooc")
    await griefer.next("subscribed")
    async with Healthy(server) as healthy:
        await message_flood(griefer, frame, messages=FLOOD)
        assert await griefer.closed() == 4029
        assert griefer.ws.close_reason == "too many messages"
    healthy.assert_served()
    errors = []
    while not griefer.inbox.empty():
        message = griefer.inbox.get_nowait()
        if message["type"] == "error":
            errors.append(message)
    assert errors
    assert {error["code"] for error in errors} == {"rate_limited"}
    assert all(error["retry_after"] > 0 for error in errors)
    # The listeners stay, and heard no more than the burst (and what the rate let through).
    memory = await asyncio.to_thread(server.memory)
    assert memory["connections"]["active_websockets"] == 5
    for listener in listeners:
        await listener.send(op="ping", id="still-here")
        assert (await listener.next("pong"))["id"] == "still-here"
        heard = 0
        while not listener.inbox.empty():
            message = listener.inbox.get_nowait()
            heard += message.get("from") == "griefer"
        assert heard <= 30 + 10 * 5
        await listener.close()


async def test_a_flood_of_posted_commands_gets_429(gateway: Callable[..., Gateway]) -> None:
    server = gateway()
    # Faster than the rate refills (10 a second): a burst, refusals, then the close.
    statuses, records = await posted_commands(server)
    assert statuses[:30] == [202] * 30
    assert 429 in statuses
    # A whole burst more while limited: the stream is closed, with the WebSocket's code.
    assert b'"code":4029' in records


async def test_a_rate_limited_post_says_when_to_try_again(gateway: Callable[..., Gateway]) -> None:
    server = gateway(player_message_burst=1, player_messages_per_second=0.5)
    headers = {"Authorization": f"Bearer {server.token('poster')}"}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("GET", "/events", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        frame = {"op": "say", "text": "x"}
        assert (await http.post("/commands", json=frame, headers=headers)).status_code == 202
        limited = await http.post("/commands", json=frame, headers=headers)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.json()["error"]["retry_after"] > 0


async def test_a_griefers_tells_cannot_push_out_anyone_elses(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(
        player_messages_per_second=10000,
        player_message_burst=10000,
        max_pending_per_sender=50,
        max_pending_messages=60,
    )
    for away in ("bob", "carol"):  # seen lately, gone now: tells to them are queued
        async with await Player.connect(server.ws(away)) as player:
            await player.next("welcome")
    async with (
        await Player.connect(server.ws("alice")) as alice,
        await Player.connect(server.ws("griefer")) as griefer,
        await Player.connect(server.ws("dave")) as dave,
    ):
        await alice.send(op="tell", to="bob", text="meet me at the gate")
        await alice.next("told")
        answers = []
        for i in range(100):
            await griefer.send(op="tell", to="bob", text=f"spam {i}", id=i)
            answers.append(await griefer.next("told", "error"))
        assert [a["type"] for a in answers] == ["event"] * 50 + ["error"] * 50
        assert answers[-1]["code"] == "mailbox_full"
        await griefer.send(op="tell", to="carol", text="more spam")
        assert (await griefer.next("error"))["code"] == "mailbox_full"
        await dave.send(op="tell", to="bob", text="hi from dave")
        await dave.next("told")
    memory = await asyncio.to_thread(server.memory)
    assert memory["data_structures"]["pending_message_entries"] == 52
    async with await Player.connect(server.ws("bob")) as bob:
        await bob.next("welcome")
        tells = [(await bob.next("tell"))["text"] for _ in range(52)]
    assert tells[0] == "meet me at the gate"
    assert tells[-1] == "hi from dave"


async def test_deeply_nested_json_is_answered_not_dropped(gateway: Callable[..., Gateway]) -> None:
    server = gateway()
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with (
        await Player.connect(server.ws("alice")) as alice,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await alice.next("welcome")
        for _ in range(5):
            await alice.ws.send("[" * 1000)  # 1 KB that nests a thousand deep
            assert (await alice.next("error"))["code"] == "bad_json"
        response = await http.post("/commands", content=b"[" * 1000, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_json"
        await alice.send(op="ping", id="alive")
        assert (await alice.next("pong"))["id"] == "alive"
    assert not [r for r in server.records() if r["level"] == "error"]
