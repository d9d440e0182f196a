"""``GameLink`` in the test's own process: a real link (a Unix socket) and a game speaking JSON
on it, players as recording connections, and time advanced by hand: the queue's bounds, the
expiry, what the link counts, and a game that stops reading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, unix_connect

from mudgate import Gateway
from mudgate.game.link import GameLink

from ..conftest import FakeClock, RecordingConnection, connect, make_settings, settle

TOKEN = "a-secret-of-the-tests-own"
# A link that holds 4 KB, and a player free to send as much as a test needs to fill it.
FLOOD: dict[str, Any] = {
    "game_link_buffer_bytes": 4096,
    "game_queue_per_player": 10_000,
    "game_queue_bytes": 10**8,
    "player_messages_per_second": 10**6,
    "player_message_burst": 10**6,
}


def answers(conn: RecordingConnection) -> list[dict[str, Any]]:
    return [json.loads(message.data) for message in conn.written]


class Game:
    """The game's end: JSON frames in and out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.unread: list[dict[str, Any]] = []

    async def send(self, *frames: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(list(frames) if len(frames) > 1 else frames[0]))

    async def next(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                while self.unread:
                    frame = self.unread.pop(0)
                    if frame["type"] == kind:
                        return frame
                message = json.loads(await self.ws.recv())
                self.unread.extend(message if isinstance(message, list) else [message])


@asynccontextmanager
async def linked(tmp_path: Path, clock: FakeClock, **settings: Any) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        make_settings(game_link=str(tmp_path / "link.sock"), game_token=TOKEN, **settings),
        clock=clock,
    )
    async with gateway.running():
        yield gateway
        for conn in list(gateway.hub.connections()):
            gateway.hub.disconnect(conn)


@asynccontextmanager
async def attach(gateway: Gateway, ready: bool = True) -> AsyncIterator[Game]:
    link = gateway.game_link
    assert link is not None
    # A game that stopped reading does not finish the close handshake: do not wait long for it.
    async with unix_connect(link.address, uri="ws://localhost/", close_timeout=0.2) as ws:
        game = Game(ws)
        ops = [{"op": "act", "fields": []}]
        await game.send({"type": "hello", "token": TOKEN, "ops": ops, "name": "t", "pid": 1})
        await game.next("synced")
        if ready:
            await game.send({"type": "ready"})
            await game.next("active")
        yield game


async def command(gateway: Gateway, conn: RecordingConnection, frame: dict[str, Any]) -> Any:
    error = await gateway.commands.dispatch(gateway.hub, conn, json.dumps(frame))
    return None if error is None else (error.code, str(error), error.retry_after)


async def test_commands_wait_within_bounds_and_expire_with_an_answer(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(
        tmp_path, clock, game_queue_per_player=2, game_queue_seconds=10, game_queue_bytes=2000
    ) as gateway:
        link = gateway.game_link
        assert isinstance(link, GameLink)
        alice, bob = connect(gateway.hub, "alice"), connect(gateway.hub, "bob")
        assert await command(gateway, alice, {"op": "act", "id": 1}) is None  # queued
        assert await command(gateway, alice, {"op": "act", "id": 2}) is None
        refused = await command(gateway, alice, {"op": "act", "id": 3})  # past the player's 2
        assert refused[0] == "game_unavailable"
        assert "no game is attached to the gateway yet" in refused[1]
        too_big = await command(gateway, bob, {"op": "act", "pad": "x" * 3000, "id": 4})
        assert too_big[:2] == ("game_unavailable", "the game is behind; try again in a moment")
        assert link.status()["queued"] == 4  # two commands, and alice's and bob's arrivals
        assert link.alerts() == (None, None)  # not down for longer than a start takes
        clock.advance(31)
        assert link.alerts()[0] == "no game attached yet"
        clock.advance(10)
        link.expire()
        await settle()
        expired = [m for m in answers(alice) if m["type"] == "error"]
        assert [m["id"] for m in expired] == [1, 2]
        assert {m["code"] for m in expired} == {"game_unavailable"}
        assert link.status()["queued"] == 0
        assert link.status()["events_dropped"] == 2
        assert link.status()["refused"] == 2
        link.reload("SIGHUP")  # logged: this gateway starts no game


async def test_a_ready_game_answers_and_a_busy_player_is_rate_limited(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(tmp_path, clock, game_queue_per_player=1) as gateway:
        link = gateway.game_link
        assert link is not None
        alice = connect(gateway.hub, "alice")
        async with attach(gateway) as game:
            assert "act" in gateway.commands
            assert await command(gateway, alice, {"op": "act", "id": 1}) is None
            sent = await game.next("command")
            busy = await command(gateway, alice, {"op": "act", "id": 2})
            assert busy[0] == "rate_limited"
            assert busy[2] == 1.0
            # The player's own command, answered here, waits for the one with the game.
            said = asyncio.create_task(command(gateway, alice, {"op": "say", "text": "hi"}))
            await asyncio.sleep(0.05)
            assert not said.done()
            await game.send(
                {"type": "reply", "seq": sent["seq"], "event": "acted"},
                {"type": "done", "seq": sent["seq"]},
            )
            assert await said is None
            await settle()
            events = [m.get("event") for m in answers(alice)]
            assert events.index("acted") < events.index("say")
            # A call the gateway cannot answer is answered with why; a bad frame is refused.
            await game.send({"type": "call", "call": 1, "method": "players_in", "args": {}})
            assert "room" in (await game.next("result"))["error"]
            await game.send({"type": "move", "player": "alice"})  # no room: refused, logged
            await game.send({"type": "state", "player": "alice", "state": {"hp": 3}})
            await game.send({"type": "call", "call": 2, "method": "who"})
            assert (await game.next("result"))["value"] == ["alice"]
            assert gateway.hub.state_of("alice") == {"hp": 3}
            status = link.status()
            assert (status["state"], status["name"], status["commands"]) == ("ready", "t", 1)


async def test_a_game_that_stops_reading_is_closed(tmp_path: Path, clock: FakeClock) -> None:
    async with linked(
        tmp_path,
        clock,
        **FLOOD,
    ) as gateway:
        link = gateway.game_link
        assert link is not None
        alice = connect(gateway.hub, "alice")
        async with attach(gateway) as game:
            game.ws.transport.pause_reading()  # the game reads no more
            for n in range(2000):
                await command(gateway, alice, {"op": "act", "pad": "x" * 1000, "id": n})
                if link.stats.slow_consumer:
                    break
            assert link.stats.slow_consumer == 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        assert link.status()["state"] == "down"
        await settle()
        errors = [m for m in answers(alice) if m["type"] == "error"]
        assert errors
        assert {m["code"] for m in errors} == {"game_unavailable"}


async def test_a_game_must_say_hello_with_the_secret_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(tmp_path, clock) as gateway:
        link = gateway.game_link
        assert link is not None
        async with unix_connect(link.address, uri="ws://localhost/") as ws:
            await ws.send("[not json")
            await ws.wait_closed()
            assert ws.close_code == 1008
        async with unix_connect(link.address, uri="ws://localhost/") as ws:
            await ws.send(json.dumps({"type": "failed", "token": TOKEN, "error": ""}))
            await ws.wait_closed()
        assert link.status()["failed_starts"] == 1
        assert link.alerts()[0] == "failed to start: no reason given"


def test_the_link_path_must_not_be_something_else(tmp_path: Path) -> None:
    (tmp_path / "link.sock").write_text("a file of the operator's")

    async def start() -> None:
        gateway = Gateway(make_settings(game_link=str(tmp_path / "link.sock"), game_token=TOKEN))
        async with gateway.running():
            pass

    with pytest.raises(OSError, match="exists and is not a socket"):
        asyncio.run(start())
    assert (tmp_path / "link.sock").read_text() == "a file of the operator's"


async def test_what_a_game_gets_wrong_is_refused_and_the_player_still_answered(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(tmp_path, clock) as gateway:
        link = gateway.game_link
        assert link is not None
        alice = connect(gateway.hub, "alice")
        async with attach(gateway) as game:
            await command(gateway, alice, {"op": "act", "id": 1})
            sent = await game.next("command")
            done = {"type": "done", "seq": sent["seq"]}
            await game.send(
                {"type": "room", "room": "", "event": "x"},  # refused alone: a room is named
                {"type": "hello", "token": TOKEN},  # once is enough: refused, logged
                dict(done, error={"code": "no_such_code", "message": "oops"}),
                done,  # twice: dropped
                {"type": "reply", "seq": sent["seq"], "event": "late"},  # after done: dropped
            )
            await game.send({"type": "call", "call": 1, "method": "who"})
            await game.next("result")  # everything before it was handled
            await settle()
            errors = [m for m in answers(alice) if m["type"] == "error"]
            assert [(m["code"], m["message"], m["id"]) for m in errors] == [("internal", "oops", 1)]
            assert "late" not in [m.get("event") for m in answers(alice)]


async def test_at_most_a_few_links_may_wait_to_say_hello(tmp_path: Path, clock: FakeClock) -> None:
    async with linked(tmp_path, clock) as gateway:
        link = gateway.game_link
        assert link is not None
        silent = [
            await unix_connect(link.address, uri="ws://localhost/", close_timeout=0.1)
            for _ in range(8)
        ]
        async with unix_connect(link.address, uri="ws://localhost/") as ws:
            await ws.wait_closed()
            assert ws.close_code == 1013
        for ws in silent:
            await ws.close()


async def test_what_waited_drains_into_a_new_game_as_it_reads(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(
        tmp_path,
        clock,
        **FLOOD,
    ) as gateway:
        link = gateway.game_link
        assert link is not None
        alice = connect(gateway.hub, "alice")
        for n in range(50):  # 50 KB waiting, for a link that holds 4 KB
            assert await command(gateway, alice, {"op": "act", "pad": "x" * 1000, "id": n}) is None
        async with attach(gateway) as game:
            await command(gateway, alice, {"op": "act", "id": "after"})  # behind them
            ids = [(await game.next("command"))["id"] for _ in range(51)]
            assert ids == [*range(50), "after"]
            assert link.stats.slow_consumer == 0


async def test_a_game_with_no_room_for_what_waited_is_a_slow_consumer(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with linked(
        tmp_path,
        clock,
        **FLOOD,
        game_queue_seconds=0.3,  # the clock is the test's: only the drain's wait is real time
    ) as gateway:
        link = gateway.game_link
        assert link is not None
        alice = connect(gateway.hub, "alice")
        for n in range(3000):  # 3 MB: more than the link and the kernel hold
            await command(gateway, alice, {"op": "act", "pad": "x" * 1000, "id": n})
        async with attach(gateway, ready=False) as game:
            await game.send({"type": "ready"})
            game.ws.transport.pause_reading()
            async with asyncio.timeout(10):
                while not link.stats.slow_consumer:
                    await asyncio.sleep(0.05)
