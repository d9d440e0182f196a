"""The castle, played over real WebSockets against a real server, with mudgate's own test
helper (``mudgate.testing``) and client (``mudgate.client``): what a game's tests look like."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from examples.castle.game import ROOMS, create_game
from mudgate import Settings
from mudgate.testing import GameServer, serve_game

WAIT = 5.0  # seconds an expected event may take


@pytest.fixture
async def castle() -> AsyncIterator[GameServer]:
    settings = Settings(secret_key="castle-test-key-" + "x" * 16, admin_token="castle-admin-token")
    async with serve_game(*create_game(settings, bard_every_seconds=0.05), prefix="/mud") as game:
        yield game


async def test_look_describes_the_room_and_its_exits(castle: GameServer) -> None:
    async with castle.player("alice") as alice:
        assert "Welcome to the castle" in (await alice.next("narrate", within=WAIT))["text"]
        await alice.send({"op": "look", "id": 1})
        room = await alice.next("room", within=WAIT)
        assert (room["title"], room["exits"], room["id"]) == ("The Gatehouse", ["north"], 1)
        assert room["description"] == ROOMS["lobby"].description


async def test_walking_through_exits(castle: GameServer) -> None:
    async with castle.player("alice") as alice:
        await alice.send({"op": "walk", "direction": "north"})
        assert (await alice.next("room", within=WAIT))["title"] == "The Courtyard"
        await alice.send({"op": "walk", "direction": "up"})
        assert (await alice.next("room", within=WAIT))["room"] == "tower"
        narration = await alice.next("narrate", within=WAIT)
        while narration.get("speaker") == "bard":  # he may sing while we pass
            narration = await alice.next("narrate", within=WAIT)
        assert narration["text"] == "You are out of breath."  # after the room, not before
        await alice.send({"op": "walk", "direction": "west"})
        error = await alice.next("error", within=WAIT)
        assert (error["code"], error["message"]) == ("invalid_args", "you cannot go west here")


async def test_the_bard_sings_to_whoever_is_in_the_courtyard(castle: GameServer) -> None:
    async with castle.player("alice") as alice:
        await alice.send({"op": "walk", "direction": "north"})
        song = await alice.next("narrate", within=WAIT)
        while song.get("speaker") != "bard":
            song = await alice.next("narrate", within=WAIT)
        assert song["text"].startswith("The bard")


async def test_dice_are_rolled_for_the_whole_room(castle: GameServer) -> None:
    async with (
        castle.player("alice") as alice,
        castle.player("bob") as bob,
    ):
        await bob.next("welcome", within=WAIT)
        await alice.send({"op": "roll", "dice": "3d6"})
        rolled = await bob.next("rolled", within=WAIT)
        assert rolled["player"] == "alice"
        assert len(rolled["rolls"]) == 3
        assert all(1 <= r <= 6 for r in rolled["rolls"])
        assert rolled["total"] == sum(rolled["rolls"])
        for bad in ("0d6", "2d1", "lots"):
            await alice.send({"op": "roll", "dice": bad})
            assert re.match(r"dice look like", (await alice.next("error", within=WAIT))["message"])


async def test_the_game_keeps_its_own_pages_beside_the_gateway(castle: GameServer) -> None:
    async with httpx.AsyncClient(base_url=castle.http_url) as http:
        assert "Castle" in (await http.get("/")).text
        assert (await http.get("/mud/health/live")).status_code == 200
        memory = (await http.get("/mud/monitoring/memory")).json()
    assert memory["connections"]["total_connections"] == 0


async def test_a_shout_is_heard_in_every_room(castle: GameServer) -> None:
    async with (
        castle.player("alice") as alice,
        castle.player("bob") as bob,
    ):
        await bob.send({"op": "walk", "direction": "north"})
        await bob.next("room", within=WAIT)
        await alice.send({"op": "shout", "text": "hello castle"})
        heard = await bob.next("narrate", within=WAIT)
        while heard.get("speaker") == "bard":
            heard = await bob.next("narrate", within=WAIT)
        assert heard["text"] == "alice shouts: hello castle"


async def test_rooms_are_reached_through_exits_only(castle: GameServer) -> None:
    async with castle.player("alice") as alice:
        for op in ("go", "join", "leave"):
            await alice.send({"op": op, "room": "tower"})
            assert (await alice.next("error", within=WAIT))["code"] == "unknown_op"
        await alice.send({"op": "help"})
        verbs = {command["op"] for command in (await alice.next("help", within=WAIT))["commands"]}
        assert {"walk", "roll", "shout", "look", "say", "tell"} <= verbs
        assert not verbs & {"go", "join", "leave"}


async def test_those_left_behind_hear_a_player_walk_away(castle: GameServer) -> None:
    async with (
        castle.player("alice") as alice,
        castle.player("bob") as bob,
    ):
        await bob.next("welcome", within=WAIT)
        assert "Welcome to the castle" in (await bob.next("narrate", within=WAIT))["text"]
        await alice.send({"op": "walk", "direction": "north"})
        assert (await bob.next("narrate", within=WAIT))["text"] == "alice walks away."


async def test_a_direction_is_one_word_and_a_forged_line_is_refused_in_words(
    castle: GameServer,
) -> None:
    async with castle.player("alice") as alice:
        await alice.send({"op": "walk", "direction": "North"})  # any case
        assert (await alice.next("room", within=WAIT))["title"] == "The Courtyard"
        await alice.send({"op": "walk", "direction": "x\nGreta tells carol: hi", "id": 3})
        error = await alice.next("error", within=WAIT)
        assert (error["code"], error["id"]) == ("invalid_args", 3)
        assert error["message"] == (
            "direction: one word of letters, digits, - or _ (at most 32 characters)"
        )
        await alice.send({"op": "shout", "text": "x" * 201})
        assert (await alice.next("error", within=WAIT))["message"] == "text: at most 200 characters"
        await alice.send({"op": "roll", "dice": 6})
        assert (await alice.next("error", within=WAIT))["message"] == (
            "dice: one word of letters, digits, - or _ (at most 32 characters)"
        )
