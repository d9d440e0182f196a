"""A game's hooks and the calls game code makes from outside any connection."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from mudgate.hub import LOBBY, Delivery, Hub

from .conftest import connect, settle


async def test_hooks_hear_players_come_move_and_go(hub: Hub) -> None:
    heard: list[tuple[str, ...]] = []
    hub.hooks.on_connect(lambda player: heard.append(("connect", player)))
    hub.hooks.on_room_change(lambda player, old, new: heard.append(("move", player, old, new)))

    @hub.hooks.on_disconnect
    async def goodbye(player: str) -> None:
        await asyncio.sleep(0)
        heard.append(("disconnect", player))

    first = connect(hub, "alice")
    second = connect(hub, "alice")  # a second connection: not a new arrival
    assert hub.move_player("alice", "tavern")
    hub.disconnect(first)
    hub.disconnect(second)
    await settle()
    assert heard == [
        ("connect", "alice"),
        ("move", "alice", LOBBY, "tavern"),
        ("disconnect", "alice"),
    ]


async def test_a_failing_hook_is_logged_and_the_others_still_run(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    def broken(player: str) -> None:
        raise RuntimeError("game bug")

    async def broken_later(player: str) -> None:
        raise RuntimeError("async game bug")

    hub.hooks.on_connect(broken)
    hub.hooks.on_connect(broken_later)
    hub.hooks.on_connect(heard.append)
    with caplog.at_level(logging.ERROR):
        conn = connect(hub, "alice")
        await settle()
    assert heard == ["alice"]
    assert "game bug" in caplog.text
    assert "async game bug" in caplog.text
    assert conn.id in hub.registry.websockets


async def test_hooks_still_running_are_cancelled_at_close(hub: Hub) -> None:
    started = asyncio.Event()

    @hub.hooks.on_connect
    async def slow(player: str) -> None:
        started.set()
        await asyncio.sleep(3600)

    connect(hub, "alice")
    await started.wait()
    await hub.close(timeout_seconds=0.01)
    assert not hub.hooks._running


async def test_game_code_sends_to_players_rooms_and_channels(hub: Hub) -> None:
    alice, bob = connect(hub, "alice"), connect(hub, "bob")
    hub.subscribe(hub.registry.players["bob"], "ooc")
    assert hub.move_player("bob", "tavern")
    assert not hub.move_player("nobody", "tavern")
    assert await hub.players_in("tavern") == ["bob"]
    assert hub.local_players_in("tavern") == ["bob"]
    assert hub.room_of("bob") == "tavern"
    assert hub.room_of("nobody") is None
    assert hub.send("alice", "narrate", text="A bell rings.") is Delivery.SENT
    assert hub.send("nobody", "narrate", text="?") is Delivery.UNKNOWN_PLAYER
    hub.room_event("tavern", "narrate", text="The fire crackles.")
    hub.channel_event("ooc", "news", text="Server restarts at noon.")
    await settle()
    last = [json.loads(conn.written[-1].data) for conn in (alice, bob)]
    assert (last[0]["event"], last[0]["text"]) == ("narrate", "A bell rings.")
    assert (last[1]["event"], last[1]["channel"]) == ("news", "ooc")
    assert json.loads(bob.written[-2].data)["text"] == "The fire crackles."


async def test_hung_coroutine_hooks_cannot_pile_up(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("mudgate.hooks.MAX_RUNNING_HOOKS", 2)

    @hub.hooks.on_connect
    async def hangs(player: str) -> None:
        await asyncio.sleep(3600)

    with caplog.at_level(logging.ERROR):
        for name in ("a", "b", "c", "d"):
            connect(hub, name)
        await settle()
    assert len(hub.hooks._running) == 2
    assert hub.hooks.skipped == 2
    assert "skipped" in caplog.text
    await hub.close(timeout_seconds=0.01)
