"""Resume against a real server: a player who reconnects says where they were and gets what
was said meanwhile, exactly once and in order, or is told ``recovered: false``."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx

from .clients import Player
from .server import RunningServer, wait_for


def position(event: dict[str, Any]) -> str:
    kind = "room" if "room" in event else "channel"
    return f"{kind}:{event[kind]}:{event['offset']}:{event['epoch']}"


async def said(player: Player, count: int) -> list[dict[str, Any]]:
    return [await player.next("say") for _ in range(count)]


async def drain(player: Player, name: str = "resumed") -> list[dict[str, Any]]:
    """Everything up to and including the next ``name`` event (or error)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            message = await player.inbox.get()
            seen.append(message)
            if message.get("event") == name or message["type"] == "error":
                return seen


async def test_room_events_carry_an_offset_and_epoch(server: RunningServer) -> None:
    async with await Player.connect(server.ws("ann")) as ann:
        welcome = await ann.next("welcome")
        assert welcome["reconnect_window"] == server.settings.reconnect_window
        for text in ("one", "two", "three"):
            await ann.send(op="say", text=text)
        events = await said(ann, 3)
    assert [event["offset"] for event in events] == [1, 2, 3]
    assert len({event["epoch"] for event in events}) == 1
    assert all(isinstance(event["epoch"], str) and event["epoch"] for event in events)


async def test_a_player_who_comes_back_gets_what_was_said_exactly_once(
    server: RunningServer,
) -> None:
    async with await Player.connect(server.ws("bob")) as bob:
        await bob.next("welcome")
        await bob.send(op="go", room="hall")
        await bob.next("arrive")
        async with await Player.connect(server.ws("cat")) as cat:
            await cat.next("welcome")
            await cat.send(op="go", room="hall")
            await cat.send(op="say", text="before")
            last = await bob.next("say")
            assert last["text"] == "before"
            await bob.close()
            for n in range(5):
                await cat.send(op="say", text=f"missed {n}")
            await said(cat, 6)
            resume = quote(position(last))
            async with await Player.connect(f"{server.ws('bob')}&resume={resume}") as again:
                welcome = await again.next("welcome")
                assert welcome["room"] == "hall"  # back where they were, not the lobby
                seen = await drain(again)
                await cat.send(op="say", text="live")
                live = await again.next("say")
    replayed = [event["text"] for event in seen if event.get("event") == "say"]
    assert replayed == [f"missed {n}" for n in range(5)]
    resumed = seen[-1]
    assert resumed["recovered"] is True
    assert resumed["missed"] >= 5
    assert resumed["room"] == "hall"
    assert resumed["offset"] == live["offset"] - 1
    assert live["text"] == "live"
    stats = server.call(lambda: (server.hub.resumes, server.hub.recovered))
    assert stats == (1, 1)


async def test_a_wrong_epoch_or_a_future_offset_is_told_not_recovered(
    server: RunningServer,
) -> None:
    async with await Player.connect(server.ws("dan")) as dan:
        await dan.next("welcome")
        await dan.send(op="say", text="hi")
        event = await dan.next("say")
    for resume, reason in (
        (f"room:lobby:{event['offset']}:00000000", "epoch_changed"),
        (f"room:lobby:{event['offset'] + 1000}:{event['epoch']}", "offset_ahead"),
    ):
        async with await Player.connect(f"{server.ws('dan')}&resume={quote(resume)}") as again:
            resumed = (await drain(again))[-1]
        assert resumed["event"] == "resumed"
        assert resumed["recovered"] is False
        assert resumed["reason"] == reason
        assert resumed["epoch"] == event["epoch"]
        assert resumed["offset"] >= event["offset"]


async def test_bad_resumes_are_answered_and_the_connection_stays(server: RunningServer) -> None:
    cases = {
        "nonsense": "invalid_resume",
        "room:hall:-1:ab": "invalid_resume",
        "room:hall:1:XYZ": "invalid_resume",
        "room:" + "x" * 40 + ":1:ab": "invalid_resume",
        ",".join(f"channel:c{n}:1:ab" for n in range(200)): "invalid_resume",
        "player:eve:1:ab": "forbidden_topic",
        "room:a:1:ab,room:b:1:ab": "forbidden_topic",
    }
    for resume, code in cases.items():
        url = f"{server.ws('eve')}&resume={quote(resume)}"
        async with await Player.connect(url) as eve:
            await eve.next("welcome")
            error = await eve.next("error")
            assert error["code"] == code, resume
            await eve.send(op="ping")
            await eve.next("pong")


async def test_a_resume_past_the_request_line_cap_is_refused_by_the_protocol_layer(
    server: RunningServer,
) -> None:
    resume = "room:a:1:ab," * (server.settings.max_request_head_bytes // 8)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        answer = await http.get(f"/ws?resume={resume}")
    assert answer.status_code in (400, 414)


async def test_the_game_can_keep_a_player_out_of_the_room_they_were_in(
    server: RunningServer,
) -> None:
    server.call(lambda: server.hub.hooks.on_return(lambda player, topic: topic != "room:vault"))
    async with await Player.connect(server.ws("fay")) as fay:
        await fay.next("welcome")
        await fay.send(op="go", room="vault")
        await fay.send(op="say", text="gold")
        event = await fay.next("say")
    url = f"{server.ws('fay')}&resume={quote(position(event))}"
    async with await Player.connect(url) as again:
        assert (await again.next("welcome"))["room"] == "lobby"
        error = await again.next("error")
    assert error["code"] == "forbidden_topic"
    assert "vault" in error["message"]


async def test_channels_are_resumed_too(server: RunningServer) -> None:
    async with await Player.connect(server.ws("gus")) as gus:
        await gus.next("welcome")
        await gus.send(op="subscribe", channel="ooc")
        await gus.send(op="chat", channel="ooc", text="first")
        first = await gus.next("chat")
    async with await Player.connect(server.ws("hal")) as hal:
        await hal.next("welcome")
        await hal.send(op="subscribe", channel="ooc")
        await hal.send(op="chat", channel="ooc", text="second")
        await hal.next("chat")
        async with await Player.connect(f"{server.ws('gus')}&resume={position(first)}") as gus:
            seen = await drain(gus)
            await hal.send(op="chat", channel="ooc", text="third")
            assert (await gus.next("chat"))["text"] == "third"  # subscribed again
    assert [event["text"] for event in seen if event.get("event") == "chat"] == ["second"]
    assert seen[-1]["channel"] == "ooc"
    assert seen[-1]["recovered"] is True


async def test_sse_resumes_from_last_event_id(server: RunningServer) -> None:
    token = server.token("ida")
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        ids: list[str] = []
        async with http.stream("GET", f"/events?token={token}") as stream:
            bearer = {"authorization": f"Bearer {token}"}
            await http.post("/commands", json={"op": "say", "text": "one"}, headers=bearer)
            async for line in stream.aiter_lines():
                if line.startswith("id: "):
                    ids.append(line[4:])
                if line.startswith("data: ") and '"say"' in line:
                    break
        async with await Player.connect(server.ws("jon")) as jon:
            await jon.next("welcome")
            await jon.send(op="say", text="while away")
            await jon.next("say")
        records: list[dict[str, Any]] = []
        headers = {"last-event-id": ids[-1]}
        async with http.stream("GET", f"/events?token={token}", headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    records.append(json.loads(line[6:]))
                    if records[-1].get("event") == "resumed":
                        break
    assert ids[-1].startswith("room:lobby:")
    texts = [record.get("text") for record in records if record.get("event") == "say"]
    assert texts == ["while away"]
    assert records[-1]["recovered"] is True


async def test_a_resume_flood_is_limited_like_a_message_flood(server_with: Any) -> None:
    server = server_with(player_message_burst=5, player_messages_per_second=0.5)
    async with await Player.connect(server.ws("kim")) as kim:
        await kim.next("welcome")
        await kim.send(op="say", text="x")
        event = await kim.next("say")
    resume = quote(position(event))
    answers: list[dict[str, Any]] = []
    for _ in range(8):
        async with await Player.connect(f"{server.ws('kim')}&resume={resume}") as again:
            await again.next("welcome")
            answers.append(await again.next("resumed", "error"))
    assert [answer.get("event", answer["type"]) for answer in answers[:4]] == ["resumed"] * 4
    refused = answers[-1]
    assert refused["code"] == "rate_limited"
    assert refused["retry_after"] > 0


async def test_the_welcome_and_subscribed_say_where_a_topic_is(server: RunningServer) -> None:
    async with await Player.connect(server.ws("lea")) as lea:
        first = await lea.next("welcome")
        await lea.send(op="say", text="one")
        said_one = await lea.next("say")
        await lea.send(op="subscribe", channel="news")
        fresh = await lea.next("subscribed")
        await lea.send(op="chat", channel="news", text="extra")
        chat = await lea.next("chat")
        await lea.send(op="unsubscribe", channel="news")
        await lea.next("unsubscribed")
        await lea.send(op="subscribe", channel="news")
        known = await lea.next("subscribed")
        async with await Player.connect(server.ws("max")) as max_:
            welcome = await max_.next("welcome")
    assert first["position"] is None or first["position"]["offset"] < said_one["offset"]
    assert welcome["position"] == {"offset": said_one["offset"], "epoch": said_one["epoch"]}
    assert fresh["position"] is None  # nothing said there yet
    assert known["position"] == {"offset": chat["offset"], "epoch": chat["epoch"]}


async def test_a_client_that_heard_nothing_yet_gets_the_whole_epoch(
    server: RunningServer,
) -> None:
    async with await Player.connect(server.ws("ned")) as ned:
        await ned.next("welcome")
        await ned.send(op="subscribe", channel="quiet")
        assert (await ned.next("subscribed"))["position"] is None
    async with await Player.connect(server.ws("oli")) as oli:
        await oli.next("welcome")
        await oli.send(op="subscribe", channel="quiet")
        await oli.send(op="chat", channel="quiet", text="first words")
        await oli.next("chat")
    async with await Player.connect(f"{server.ws('ned')}&resume=channel:quiet:0:") as ned:
        seen = await drain(ned)
    assert [event["text"] for event in seen if event.get("event") == "chat"] == ["first words"]
    assert seen[-1]["recovered"] is True


async def test_a_refused_topic_is_named_in_the_error(server: RunningServer) -> None:
    async with await Player.connect(f"{server.ws('pat')}&resume=player:pat:1:ab") as pat:
        error = await pat.next("error")
    assert error["code"] == "forbidden_topic"
    assert error["topic"] == "player:pat"


async def test_a_resume_cannot_walk_a_player_into_a_room_they_did_not_leave_from(
    server: RunningServer,
) -> None:
    async with await Player.connect(server.ws("quin")) as quin:
        await quin.next("welcome")
        await quin.send(op="go", room="vault")
        await quin.send(op="say", text="the combination is 4-8-15")
        secret = await quin.next("say")
        resume = quote(f"room:vault:0:{secret['epoch']}")
        async with await Player.connect(f"{server.ws('mallory')}&resume={resume}") as mallory:
            welcome = await mallory.next("welcome")
            error = await mallory.next("error")
            await mallory.send(op="ping")
            seen = [await mallory.inbox.get() for _ in range(1)]
    assert welcome["room"] == "lobby"
    assert error["code"] == "forbidden_topic"
    assert error["topic"] == "room:vault"
    assert all("4-8-15" not in json.dumps(message) for message in seen)
    assert server.call(lambda: server.hub.room_of("mallory")) in (None, "lobby")


async def test_an_sse_stream_resumes_the_channels_it_joined_but_never_heard(
    server: RunningServer,
) -> None:
    token = server.token("rex")
    bearer = {"authorization": f"Bearer {token}"}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        async with http.stream("GET", f"/events?token={token}") as stream:
            await http.post("/commands", json={"op": "subscribe", "channel": "ooc"}, headers=bearer)
            await http.post("/commands", json={"op": "say", "text": "hi"}, headers=bearer)
            async for line in stream.aiter_lines():
                if line.startswith("id: "):
                    ids.append(line[4:])
                if line.startswith("data: ") and '"say"' in line:
                    break
        await wait_for(lambda: server.call(lambda: server.hub.player("rex")) is None)
        headers = {"last-event-id": ids[-1]}
        async with http.stream("GET", f"/events?token={token}", headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: ") and '"resumed"' in line and "ooc" in line:
                    break
            channels = server.call(lambda: sorted(server.hub.player("rex").channels))  # type: ignore[union-attr]
    assert "channel:ooc:" in ids[-1]
    assert channels == ["ooc"]
