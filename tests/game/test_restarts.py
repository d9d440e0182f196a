"""The game in a process of its own, against real processes: the gateway holds the players while
the game restarts (SIGHUP, a changed file), crashes, fails to start or stops reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..e2e.clients import Player
from .conftest import LinkedGateway, edit

WAIT = 10.0


async def answers(
    player: Player, count: int, *events: str, timeout: float = WAIT
) -> dict[Any, list[dict[str, Any]]]:
    """Read until ``count`` frames with an ``id`` came back and each of ``events`` was seen;
    every answer, by id (the events under their names)."""
    by_id: dict[Any, list[dict[str, Any]]] = {}
    async with asyncio.timeout(timeout):
        while sum(len(by_id.get(key, [])) for key in by_id if key not in events) < count or (
            not all(event in by_id for event in events)
        ):
            message = await player.inbox.get()
            if "id" in message:
                by_id.setdefault(message["id"], []).append(message)
            elif message.get("event") in events:
                by_id.setdefault(message["event"], []).append(message)
    return by_id


async def test_the_game_answers_from_its_own_process(linked: Any) -> None:
    gateway: LinkedGateway = linked()
    state = await gateway.ready()
    assert state["pid"] not in (None, gateway.pid)
    async with gateway.player("alice") as alice:
        assert (await alice.next("narrate"))["text"] == "welcome, alice"  # its on_connect hook
        await alice.send(op="hello", id=1)
        greeting = await alice.next("greeting")
        assert (greeting["text"], greeting["pid"], greeting["id"]) == (
            "hello from the first game",
            state["pid"],
            1,
        )
        assert {"seq", "ts"} <= set(greeting)  # stamped by the gateway
        await alice.send(op="refuse", id=2)
        error = await alice.next("error")
        assert (error["code"], error["message"], error["id"]) == ("invalid_args", "not today", 2)
        await alice.send(op="busy", id="b")  # the game's own refusal, with when to retry
        busy = await alice.next("error")
        assert (busy["code"], busy["retry_after"], busy["id"]) == ("rate_limited", 2.5, "b")
        await alice.send(op="go", room="x", id=3)  # a built-in the game removed
        assert (await alice.next("error"))["code"] == "unknown_op"
        await alice.send(op="ping", id=4)  # a built-in the gateway answers itself
        assert (await alice.next("pong"))["id"] == 4
        await alice.send(op="help", id=5)
        ops = [entry["op"] for entry in (await alice.next("help"))["commands"]]
        assert {"hello", "echo", "ping", "say"} <= set(ops)
        assert "go" not in ops
        await alice.send(op="remember", id=6)  # no reply: the registry's ok, from the game
        await alice.send(op="echo", text=5, id=7)  # the game checks its own fields
        assert (await alice.next("ok"))["id"] == 6
        assert (await alice.next("error"))["code"] == "invalid_args"
    metrics = gateway.text("/metrics")
    assert "mudgate_game_up 1.0" in metrics
    assert 'mudgate_commands_total{op="hello"} 1.0' in metrics  # counted by the game's op
    assert 'mudgate_command_errors_total{code="invalid_args",op="refuse"} 1.0' in metrics


async def test_a_players_commands_take_effect_in_order(linked: Any) -> None:
    """A command the game answers, then one the gateway answers: the second waits for the first
    (`teleport`, then `say`, is said in the new room)."""
    gateway: LinkedGateway = linked()
    await gateway.ready()
    async with gateway.player("alice") as alice, gateway.player("bob") as bob:
        await alice.send(op="teleport", text="tower", id=1)
        await alice.send(op="say", text="up here")
        here = await alice.next("here")
        assert (here["room"], here["others"]) == ("tower", ["alice"])
        said = await alice.next("say")  # after the teleport's answer, in the tower
        assert said["room"] == "tower"
        await bob.send(op="teleport", text="tower", id=1)
        assert (await bob.next("here"))["others"] == ["alice", "bob"]


async def test_sighup_starts_a_fresh_game_and_no_player_notices_more_than_a_notice(
    linked: Any,
) -> None:
    gateway: LinkedGateway = linked()
    first = (await gateway.ready())["pid"]
    async with gateway.player("alice") as alice:
        await alice.send(op="remember", text="the well is deep", id="r")
        await answers(alice, 1)
        sent = 0
        for _ in range(5):
            sent += 1
            await alice.send(op="echo", text=str(sent), id=sent)
        gateway.sighup()
        for _ in range(20):  # commands keep coming while the game restarts
            sent += 1
            await alice.send(op="wait", seconds=0.01, id=sent)
            await asyncio.sleep(0.02)
        got = await answers(alice, sent, "game_restarting", "game_ready")
        state = await gateway.ready()
        assert state["pid"] != first
        assert state["restarts"] == 1
        assert got.pop("game_restarting")[0]["reason"] == "SIGHUP"
        assert got.pop("game_ready")
        assert sorted(got) == list(range(1, sent + 1))
        assert all(len(each) == 1 for each in got.values()), "every command answered once"
        assert not [m for each in got.values() for m in each if m["type"] == "error"]
        # The per-player state the game kept is there for the new process.
        await alice.send(op="recall", id="s")
        assert (await alice.next("recalled"))["state"] == {"note": "the well is deep"}
        await alice.send(op="hello", id="h")
        assert (await alice.next("greeting"))["pid"] == state["pid"]
    assert alice.ws.close_code == 1000  # closed by us, not the gateway


async def test_a_changed_file_reloads_the_game(linked: Any, game_copy: Path) -> None:
    gateway: LinkedGateway = linked("linked_sample:game", game_reload="true")
    await gateway.ready()
    async with gateway.player("alice") as alice:
        await alice.send(op="hello", id=1)
        assert (await alice.next("greeting"))["text"] == "hello from the first game"
        edit(game_copy, "the first game", "the second game")
        await alice.next("game_restarting", timeout=WAIT)
        await alice.next("game_ready", timeout=WAIT)
        await alice.send(op="hello", id=2)
        assert (await alice.next("greeting"))["text"] == "hello from the second game"


async def test_a_game_that_fails_to_import_leaves_the_running_one_in_place(
    linked: Any, game_copy: Path
) -> None:
    gateway: LinkedGateway = linked("linked_sample:game")
    pid = (await gateway.ready())["pid"]
    edit(game_copy, append="\nraise RuntimeError('the dragon ate the code')\n")
    async with gateway.player("alice") as alice:
        gateway.sighup()
        await alice.next("game_restarting")
        state = await gateway.until(lambda state: state["failed_starts"] == 1)
        assert (state["state"], state["pid"]) == ("ready", pid)
        await alice.next("game_ready")  # the old one carries on, and players are told so
        await alice.send(op="hello", id=1)
        assert (await alice.next("greeting"))["pid"] == pid
    assert "the dragon ate the code" in gateway.logs()


async def test_with_no_game_a_command_is_answered_game_unavailable(
    linked: Any, game_copy: Path
) -> None:
    edit(game_copy, text="raise ImportError('no such castle')\n")
    gateway: LinkedGateway = linked("linked_sample:game", game_queue_seconds="0.3")
    state = await gateway.until(lambda state: state["failed_starts"] >= 1)
    assert state["state"] == "down"
    assert "no such castle" in state["problem"]
    async with gateway.player("alice") as alice:
        await alice.send(op="hello", id=1)
        error = await alice.next("error")
        assert (error["code"], error["id"]) == ("game_unavailable", 1)
        assert "no such castle" in error["message"]
        assert error["retry_after"] > 0
        await alice.send(op="say", text="anyone?")  # the gateway's own commands still work
        assert (await alice.next("say"))["text"] == "anyone?"
    alerts = gateway.get("/monitoring/memory-alerts")
    assert any(alert["code"] == "GAME_UNAVAILABLE" for alert in alerts["details"]), alerts


async def test_a_game_that_crashes_mid_command(linked: Any) -> None:
    gateway: LinkedGateway = linked()
    first = (await gateway.ready())["pid"]
    async with gateway.player("alice") as alice:
        await alice.send(op="crash", id=1)
        error = await alice.next("error")
        assert (error["code"], error["id"]) == ("game_unavailable", 1)
        assert "may or may not have happened" in error["message"]
        await alice.next("game_restarting")
        await alice.send(op="hello", id=2)  # waits for the next game, then is answered
        await alice.next("game_ready", timeout=WAIT)
        greeting = await alice.next("greeting")
        assert greeting["pid"] != first
    assert (await gateway.ready())["unanswered"] == 1


async def test_a_game_that_stops_reading_is_a_slow_consumer(linked: Any) -> None:
    gateway: LinkedGateway = linked(
        game_link_buffer_bytes=str(64 * 1024),
        game_queue_per_player="2000",
        player_messages_per_second="10000",
        player_message_burst="10000",
    )
    first = (await gateway.ready())["pid"]
    async with gateway.player("alice") as alice:
        await alice.send(op="freeze", seconds=60, id="f")
        padding = "x" * 1000
        for n in range(1500):  # ~1.5 MB for a game that reads none of it; small answers
            await alice.send(op="recall", pad=padding, id=n)
        state = await gateway.until(lambda state: state["slow_consumer_closes"] >= 1)
        state = await gateway.until(
            lambda state: state["state"] == "ready" and state["pid"] != first
        )
        got = await answers(alice, 1501, timeout=30)
        assert all(len(each) == 1 for each in got.values()), "every command answered once"
        await alice.send(op="hello", id="h")
        assert (await alice.next("greeting"))["pid"] == state["pid"]
        # What waited (more than the link holds) drained into the new game as it read.
        assert gateway.game()["slow_consumer_closes"] == 1
    assert alice.ws.close_code == 1000


async def test_a_game_whose_import_hangs_is_killed_and_tried_again(
    linked: Any, game_copy: Path
) -> None:
    edit(game_copy, text="import time\ntime.sleep(60)\n")
    gateway: LinkedGateway = linked("linked_sample:game", game_start_timeout="1")
    state = await gateway.until(lambda state: state["failed_starts"] >= 1, timeout=30)
    assert state["state"] == "down"
    assert "before it attached" in state["problem"]
    assert "did not attach in 1 s: killing it" in gateway.logs()


async def test_a_game_whose_on_start_fails_does_not_start(linked: Any, game_copy: Path) -> None:
    edit(
        game_copy,
        append="\n@game.on_start\ndef load(hub):\n    raise RuntimeError('no world file')\n",
    )
    gateway: LinkedGateway = linked("linked_sample:game")
    state = await gateway.until(lambda state: state["failed_starts"] >= 1, timeout=30)
    assert state["state"] == "down"
    assert "before it was ready" in state["problem"]
    assert "no world file" in gateway.logs()
