"""A real server, real WebSocket and SSE clients: rooms, direct messages, and leaving cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import weakref
from typing import Any

import httpx

from mudgate.hub import Hub

from .clients import Player
from .server import RunningServer, wait_for

STRUCTURES = (
    "active_websockets",
    "active_sse",
    "total_connections",
    "player_websockets",
    "connection_timestamps",
    "online_players",
    "room_occupants",
    "room_subscriptions",
    "outbox_messages",
    "outbox_bytes",
)


def live_connections(hub: Hub) -> list[weakref.ref[Any]]:
    return [weakref.ref(conn) for conn in hub.connections()]


async def test_two_hundred_players_talk_and_leave_nothing_behind(server: RunningServer) -> None:
    # 180 players on WebSockets, 20 on SSE streams.
    players = [await Player.connect(server.ws(f"p{i}")) for i in range(180)]
    async with contextlib.AsyncExitStack() as streams:
        http = await streams.enter_async_context(
            httpx.AsyncClient(base_url=server.http_url, timeout=10)
        )
        sse = [
            await streams.enter_async_context(
                http.stream("GET", "/events", params={"token": server.token(f"s{i}")})
            )
            for i in range(20)
        ]
        await asyncio.gather(*(player.next("welcome") for player in players))
        assert all(stream.status_code == 200 for stream in sse)

        async def go(i: int, player: Player) -> None:
            await player.send(op="go", room=f"room{i % 10}", id=i)
            assert (await player.next("room", timeout=30))["id"] == i

        await asyncio.gather(*(go(i, player) for i, player in enumerate(players)))
        stats = server.stats()
        assert (stats["active_websockets"], stats["active_sse"]) == (180, 20)
        assert stats["online_players"] == 200
        assert stats["room_occupants"] == 11  # ten rooms, and the SSE players in the lobby

        room0 = players[0:180:10]
        await room0[0].send(op="say", text="hello room0")
        heard = await asyncio.gather(*(player.next("say") for player in room0))
        assert all((event["from"], event["text"]) == ("p0", "hello room0") for event in heard)

        refs = server.call(lambda: live_connections(server.hub))
        assert len(refs) == 200
        await asyncio.gather(*(player.close() for player in players))
    await wait_for(lambda: server.stats()["total_connections"] == 0)
    stats = server.stats()
    assert {name: stats[name] for name in STRUCTURES} == dict.fromkeys(STRUCTURES, 0)
    assert stats["last_seen"] == 200
    server.call(gc.collect)
    assert [ref for ref in refs if ref() is not None] == []


async def test_tell_reaches_one_player_and_waits_for_one_who_left(server: RunningServer) -> None:
    alice = await Player.connect(server.ws("alice"))
    bob = await Player.connect(server.ws("bob"))
    await bob.next("welcome")
    await alice.send(op="tell", to="bob", text="psst", id="t1")
    assert (await bob.next("tell"))["text"] == "psst"
    assert (await alice.next("told"))["id"] == "t1"
    await bob.close()
    await wait_for(lambda: server.stats()["online_players"] == 1)
    await alice.send(op="tell", to="bob", text="are you there?")
    await alice.send(op="tell", to="bob", text="hello?")
    await alice.next("told")
    await alice.next("told")
    async with await Player.connect(server.ws("bob")) as bob:
        await bob.next("welcome")
        assert (await bob.next("tell"))["text"] == "are you there?"
        assert (await bob.next("tell"))["text"] == "hello?"
    await alice.close()
    assert server.stats()["pending_messages"] == 0


async def test_channels_span_rooms(server: RunningServer) -> None:
    async with (
        await Player.connect(server.ws("alice")) as alice,
        await Player.connect(server.ws("bob")) as bob,
    ):
        await bob.send(op="go", room="tavern")
        for player in (alice, bob):
            await player.send(op="subscribe", channel="ooc")
            await player.next("subscribed")
        await alice.send(op="chat", channel="ooc", text="brb")
        event = await bob.next("chat")
        assert (event["from"], event["channel"], event["text"]) == ("alice", "ooc", "brb")
        await bob.send(op="unsubscribe", channel="ooc")
        await bob.next("unsubscribed")
        await bob.send(op="who", id=7)
        who = await bob.next("who")
        assert who == who | {"players": ["alice", "bob"], "count": 2, "id": 7}
        await bob.send(op="leave")
        assert (await bob.next("room"))["room"] == "lobby"
        await bob.send(op="look", id="l")
        look = await bob.next("room")
        assert look == look | {"room": "lobby", "occupants": ["alice", "bob"], "id": "l"}
        await bob.send(op="ping", id=1)
        assert (await bob.next("pong"))["id"] == 1
        await bob.send(op="say", text="back", id=2)
        assert (await bob.next("ok")) | {"ts": 0, "seq": 0} == {
            "type": "event",
            "event": "ok",
            "op": "say",
            "id": 2,
            "ts": 0,
            "seq": 0,
        }


async def test_sse_client_receives_events_and_sends_commands(server: RunningServer) -> None:
    token = server.token("carol")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=5) as http,
        http.stream("GET", "/events", params={"token": token}) as stream,
        await Player.connect(server.ws("dave")) as dave,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        lines = stream.aiter_lines()

        async def next_record(name: str) -> dict[str, Any]:
            async with asyncio.timeout(5):
                event = None
                async for line in lines:
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == name:
                        return json.loads(line[6:])  # type: ignore[no-any-return]
            raise AssertionError("stream ended")

        assert (await next_record("welcome"))["player"] == "carol"
        assert server.stats()["active_sse"] == 1
        response = await http.post(
            "/commands", json={"op": "say", "text": "over SSE"}, headers=headers
        )
        assert response.status_code == 202
        assert (await dave.next("say"))["text"] == "over SSE"
        assert (await next_record("say"))["from"] == "carol"  # her own, echoed to the room
        await dave.send(op="say", text="to SSE")
        record = await next_record("say")
        assert (record["from"], record["text"]) == ("dave", "to SSE")
    await wait_for(lambda: server.stats()["total_connections"] == 0)
    assert server.stats()["online_players"] == 0


async def test_guest_tokens_open_a_websocket(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/auth/guest")
    assert response.status_code == 200
    guest = response.json()
    assert guest["player"].startswith("guest-")
    async with await Player.connect(f"{server.ws_url}?token={guest['token']}") as player:
        assert (await player.next("welcome"))["player"] == guest["player"]


async def test_compression_is_negotiated_when_it_is_on(server_with: Any) -> None:
    server: RunningServer = server_with(ws_per_message_deflate=True)
    async with await Player.connect(server.ws("alice"), compression="deflate") as alice:
        assert alice.ws.response is not None
        assert "permessage-deflate" in alice.ws.response.headers["Sec-WebSocket-Extensions"]
        await alice.next("welcome")
        # In one room, a compressed and a plain player: the plain one gets the frame every
        # plain recipient shares, the compressed one its own.
        async with await Player.connect(server.ws("carol")) as carol:
            await carol.next("welcome")
            await alice.send(op="say", text="squeezed" * 50)
            assert (await alice.next("say"))["text"] == "squeezed" * 50
            assert (await carol.next("say"))["text"] == "squeezed" * 50
    off = server_with()
    async with await Player.connect(off.ws("bob"), compression="deflate") as bob:
        assert bob.ws.response is not None
        assert "Sec-WebSocket-Extensions" not in bob.ws.response.headers
        await bob.next("welcome")
