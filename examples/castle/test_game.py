"""The castle, played over real WebSockets against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from tests.conftest import make_settings
from tests.e2e.clients import Player
from tests.e2e.server import RunningServer

from examples.castle.game import ROOMS, create_game


@pytest.fixture
def castle() -> Iterator[RunningServer]:
    app = create_game(make_settings(), bard_every_seconds=0.05)
    server = RunningServer(make_settings(), app=app, hub=app.state.gateway.state.hub, prefix="/mud")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_look_describes_the_room_and_its_exits(castle: RunningServer) -> None:
    async with await Player.connect(castle.ws("alice")) as alice:
        assert "Welcome to the castle" in (await alice.next("narrate"))["text"]
        await alice.send(op="look", id=1)
        room = await alice.next("room")
        assert (room["title"], room["exits"], room["id"]) == ("The Gatehouse", ["north"], 1)
        assert room["description"] == ROOMS["lobby"].description


async def test_walking_through_exits(castle: RunningServer) -> None:
    async with await Player.connect(castle.ws("alice")) as alice:
        await alice.send(op="walk", direction="north")
        assert (await alice.next("room"))["title"] == "The Courtyard"
        await alice.send(op="walk", direction="up")
        assert (await alice.next("room"))["room"] == "tower"
        narration = await alice.next("narrate")
        while narration.get("speaker") == "bard":  # he may sing while we pass
            narration = await alice.next("narrate")
        assert narration["text"] == "You are out of breath."  # after the room, not before
        await alice.send(op="walk", direction="west")
        error = await alice.next("error")
        assert (error["code"], error["message"]) == ("invalid_args", "you cannot go west here")


async def test_the_bard_sings_to_whoever_is_in_the_courtyard(castle: RunningServer) -> None:
    async with await Player.connect(castle.ws("alice")) as alice:
        await alice.send(op="walk", direction="north")
        song = await alice.next("narrate")
        while song.get("speaker") != "bard":
            song = await alice.next("narrate")
        assert song["text"].startswith("The bard")


async def test_dice_are_rolled_for_the_whole_room(castle: RunningServer) -> None:
    async with (
        await Player.connect(castle.ws("alice")) as alice,
        await Player.connect(castle.ws("bob")) as bob,
    ):
        await bob.next("welcome")
        await alice.send(op="roll", dice="3d6")
        rolled = await bob.next("rolled")
        assert rolled["player"] == "alice"
        assert len(rolled["rolls"]) == 3
        assert all(1 <= r <= 6 for r in rolled["rolls"])
        assert rolled["total"] == sum(rolled["rolls"])
        for bad in ("0d6", "2d1", "lots"):
            await alice.send(op="roll", dice=bad)
            assert re.match(r"dice look like", (await alice.next("error"))["message"])


async def test_the_game_keeps_its_own_pages_beside_the_gateway(castle: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=castle.http_url) as http:
        assert "Castle" in (await http.get("/")).text
        assert (await http.get("/mud/health/live")).status_code == 200
        memory = (await http.get("/mud/monitoring/memory")).json()
    assert memory["connections"]["total_connections"] == 0


async def test_a_shout_is_heard_in_every_room(castle: RunningServer) -> None:
    async with (
        await Player.connect(castle.ws("alice")) as alice,
        await Player.connect(castle.ws("bob")) as bob,
    ):
        await bob.send(op="walk", direction="north")
        await bob.next("room")
        await alice.send(op="shout", text="hello castle")
        heard = await bob.next("narrate")
        while heard.get("speaker") == "bard":
            heard = await bob.next("narrate")
        assert heard["text"] == "alice shouts: hello castle"


async def test_rooms_are_reached_through_exits_only(castle: RunningServer) -> None:
    async with await Player.connect(castle.ws("alice")) as alice:
        for op in ("go", "join", "leave"):
            await alice.send(op=op, room="tower")
            assert (await alice.next("error"))["code"] == "unknown_op"
        await alice.send(op="help")
        verbs = {command["op"] for command in (await alice.next("help"))["commands"]}
        assert {"walk", "roll", "shout", "look", "say", "tell"} <= verbs
        assert not verbs & {"go", "join", "leave"}


async def test_those_left_behind_hear_a_player_walk_away(castle: RunningServer) -> None:
    async with (
        await Player.connect(castle.ws("alice")) as alice,
        await Player.connect(castle.ws("bob")) as bob,
    ):
        await bob.next("welcome")
        assert "Welcome to the castle" in (await bob.next("narrate"))["text"]
        await alice.send(op="walk", direction="north")
        assert (await bob.next("narrate"))["text"] == "alice walks away."
