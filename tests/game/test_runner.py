"""The game's end of the link, without a link: ``load_game`` and ``LinkedHub``, the hub's API
as frames, with its view of this node's players."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mudgate import Delivery, Game
from mudgate.game.runner import LinkedHub, load_game

from ..conftest import make_settings


def sent(hub: LinkedHub) -> list[dict[str, Any]]:
    frames = [json.loads(frame) for frame in hub._out]
    hub._out.clear()
    return frames


def test_load_game_says_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inn.py").write_text(
        "from mudgate import Game\n"
        "game = Game(name='inn')\n"
        "def make():\n    return Game(name='made')\n"
        "number = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_game("inn:game").name == "inn"
        assert load_game("inn:make").name == "made"  # a function returning a Game
        with pytest.raises(ImportError, match="has no attribute 'nothing'"):
            load_game("inn:nothing")
        with pytest.raises(TypeError, match=r"is a int, not a mudgate\.Game"):
            load_game("inn:number")
    finally:
        sys.modules.pop("inn", None)


async def test_the_linked_hub_sends_frames_and_keeps_its_view_of_the_players() -> None:
    hub = LinkedHub(Game(), make_settings(max_player_state_bytes=40))
    hub.sync([{"id": "alice", "room": "lobby", "state": {"hp": 3}}])
    hub.connected("bob", "tavern")
    hub.connected("bob", "ignored")  # known already
    assert hub.state_of("alice") == {"hp": 3}
    assert (hub.room_of("bob"), hub.room_of("nobody")) == ("tavern", None)
    assert hub.local_players_in("lobby") == ["alice"]
    assert hub.send("alice", "narrate", text="hi") is Delivery.SENT
    assert hub.send("zed", hub.event("narrate", text="?")) is Delivery.ROUTED
    hub.channel_event("ooc", "news", text="noon")
    assert not hub.move_player("nobody", "x")
    player = hub.player("bob")
    assert player is not None
    hub.move(player, "lobby")
    hub.moved("bob", "cellar")
    assert hub.room_of("bob") == "cellar"
    hub.save_state("bob", {"gold": 1})
    with pytest.raises(ValueError, match="at most 40 bytes"):
        hub.save_state("bob", {"notes": "x" * 50})
    with pytest.raises(ValueError, match="not online"):
        hub.save_state("nobody", {})
    with pytest.raises(ValueError, match="the hub sets 'room' itself"):
        hub.room_event("lobby", "weather", room="lobby")
    with pytest.raises(ValueError, match="the hub sets 'seq' itself"):
        hub.event("weather", seq=1)
    hub.disconnected("alice")
    assert hub.state_of("alice") == {}
    assert [frame["type"] for frame in sent(hub)] == ["send", "send", "channel", "move", "state"]


async def test_questions_are_calls_answered_by_number() -> None:
    hub = LinkedHub(Game(), make_settings())
    asking = [hub.who(), hub.occupants("lobby"), hub.tell("bob", "tell", text="hi")]
    tasks = [asyncio.ensure_future(question) for question in asking]
    lease = asyncio.ensure_future(hub.hold_lease("bard", 3))
    await asyncio.sleep(0)
    calls = sent(hub)
    assert [call["method"] for call in calls] == ["who", "players_in", "tell", "hold_lease"]
    hub.answered(calls[0]["call"], ["alice"], None)
    hub.answered(calls[1]["call"], ["bob"], None)
    hub.answered(calls[2]["call"], "queued", None)
    hub.answered(calls[3]["call"], None, "busy")  # refused: the lease is not held
    hub.answered(99, None, None)  # nobody asked
    assert await asyncio.gather(*tasks) == [["alice"], ["bob"], Delivery.QUEUED]
    assert await lease is False


def test_reload_watches_the_games_top_package() -> None:
    from mudgate.game.process import source_root  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    assert source_root("examples.castle.game:game") == root / "examples"
    assert source_root("tests.game.sample_game:game") == root / "tests"
    assert source_root("no_such_module_anywhere:game") is None
    assert source_root("json:loads") == Path(json.__file__).parent


def test_a_frame_larger_than_the_gateway_takes_is_refused_where_it_is_made() -> None:
    hub = LinkedHub(Game(), make_settings(game_link_max_frame_bytes=100))
    with pytest.raises(ValueError, match="over the link's 100"):
        hub.room_event("lobby", "narrate", text="x" * 200)
    assert hub._out == []
