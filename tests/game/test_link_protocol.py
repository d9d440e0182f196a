"""The game link as a game in another language sees it: a game that speaks docs/game-link.md with
nothing but a WebSocket client and JSON, against a real ``mudgate serve --game-link``.

The frames the game sends are the doc's own examples, and what the gateway sends back is
compared with them, so the doc cannot drift from the code unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
import typing
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from mudgate.game import frames
from mudgate.settings.game import GameProcess

from ..hostile.gateway import free_port
from .conftest import LinkedGateway

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "game-link.md"
WAIT = 5.0

# The doc's examples: `> {...}` the game sends, `< {...}` the gateway sends, `  alice: {...}`
# what a player receives; each a line of a ```json block.
_LINE = re.compile(r"^(?P<who>[<>]|\s+\w+:) (?P<json>[\[{].*)$")


def _examples() -> list[tuple[str, dict[str, Any]]]:
    lines: list[tuple[str, dict[str, Any]]] = []
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S):
        for line in block.splitlines():
            match = _LINE.match(line)
            if match is not None:
                lines.append((match["who"].strip(" :"), json.loads(match["json"])))
    return lines


EXAMPLES = _examples()


def example(who: str, kind: str, **matching: Any) -> dict[str, Any]:
    """A copy of the doc's first example sent by ``who`` (``>``, ``<`` or a player's name) of
    ``kind`` (a frame's ``type``, or a player's event or error), whose fields include
    ``matching``."""
    for sender, frame in EXAMPLES:
        name = frame["type"] if sender in ("<", ">") else frame.get("event", frame["type"])
        if sender == who and name == kind and matching.items() <= frame.items():
            return dict(frame)
    raise LookupError(f"docs/game-link.md has no example of {kind} from {who} with {matching}")


def unstamped(message: dict[str, Any]) -> dict[str, Any]:
    """A player's event without what the gateway stamps and differs run to run (``ts``,
    ``seq``, a room's ``epoch``)."""
    return {key: value for key, value in message.items() if key not in ("ts", "seq", "epoch")}


TOKEN = example(">", "hello")["token"]


class JsonGame:
    """The game's end of the link: frames out as JSON (several as an array), frames in one at
    a time (an array the gateway sent is several)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.unread: list[dict[str, Any]] = []  # received, not yet looked at
        self.passed: list[dict[str, Any]] = []  # looked at and passed over by ``next``

    async def send(self, *frames: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frames[0] if len(frames) == 1 else list(frames)))

    async def next(self, kind: str, timeout: float = WAIT, **matching: Any) -> dict[str, Any]:
        """The next frame of ``kind`` whose fields include ``matching``, passing over others."""
        async with asyncio.timeout(timeout):
            while True:
                while self.unread:
                    frame = self.unread.pop(0)
                    if frame["type"] == kind and matching.items() <= frame.items():
                        return frame
                    self.passed.append(frame)
                message = json.loads(await self.ws.recv())
                self.unread.extend(message if isinstance(message, list) else [message])


@pytest.fixture
def external(tmp_path: Path) -> Iterator[Any]:
    """Start gateways that wait for a game of their own on the link (no ``--game``), with the
    doc's token; each is stopped (SIGTERM) at the end of the test."""
    started: list[LinkedGateway] = []

    def start(**settings: object) -> LinkedGateway:
        settings.setdefault("game_link", f"127.0.0.1:{free_port()}")
        gateway = LinkedGateway(
            tmp_path / f"gateway-{len(started)}.log", game_token=TOKEN, **settings
        )
        started.append(gateway)
        return gateway.start()  # type: ignore[return-value]

    yield start
    for gateway in started:
        gateway.stop()


@asynccontextmanager
async def link(gateway: LinkedGateway) -> AsyncIterator[JsonGame]:
    """A WebSocket to the gateway's game link, on loopback or a Unix socket."""
    address = gateway.env["MUDGATE_GAME_LINK"]
    opening = (
        unix_connect(address, uri="ws://localhost/")
        if address.startswith("/")
        else connect(f"ws://{address}/")
    )
    async with opening as ws:
        yield JsonGame(ws)


@asynccontextmanager
async def attached(gateway: LinkedGateway) -> AsyncIterator[JsonGame]:
    """A game past its handshake: hello, the sync, ready, active."""
    async with link(gateway) as game:
        await game.send(example(">", "hello"))
        await game.next("synced")
        await game.send(example(">", "ready"))
        await game.next("active")
        yield game


async def test_a_json_game_attaches_answers_commands_and_hears_its_players(
    external: Any,
) -> None:
    gateway = external()
    async with gateway.player("alice") as alice, link(gateway) as game:
        await game.send(example(">", "hello"))
        assert await game.next("sync") == example("<", "sync")  # alice, in the lobby
        synced = await game.next("synced")
        assert synced.keys() == example("<", "synced").keys()
        assert synced["max_state_bytes"] == 4096
        await game.send(example(">", "ready"))
        assert await game.next("active") == example("<", "active")
        await alice.next("game_ready")

        # A command, as the player sent it; its reply and done.
        command = example("<", "command")
        await alice.send(**command["args"])
        assert await game.next("command") == command
        await game.send(example(">", "reply", seq=1), example(">", "done", seq=1))
        greeting = await alice.next("greeting")
        assert unstamped(greeting) == unstamped(example("alice", "greeting"))
        assert {"ts", "seq"} <= greeting.keys()  # stamped by the gateway

        # A done with an error: the player's error, with the command's id.
        await alice.send(op="greet", id=2)
        assert (await game.next("command"))["seq"] == 2
        await game.send(example(">", "done", seq=2))
        assert await alice.next("error") == example("alice", "error", code="invalid_args")

        # help shows the game's op, not the built-in it removed, which comes to the game.
        await alice.send(op="help", id=3)
        commands = {entry["op"]: entry for entry in (await alice.next("help"))["commands"]}
        assert commands["greet"] == example(">", "hello")["ops"][0]
        assert "go" not in commands
        assert "say" in commands  # the gateway's own
        await alice.send(op="go", room="tavern", id=4)
        removed = await game.next("command", op="go")
        await game.send(
            {
                "type": "done",
                "seq": removed["seq"],
                "error": {"code": "unknown_op", "message": "no"},
            }
        )
        assert (await alice.next("error"))["code"] == "unknown_op"

        # Calls, answered by their number.
        await game.send(example(">", "call", call=1))
        assert await game.next("result", call=1) == example("<", "result", call=1)
        await game.send(example(">", "call", call=3))
        assert await game.next("result", call=3) == example("<", "result", call=3)
        async with gateway.player("bob") as bob:
            assert (await game.next("connected", player="bob")).keys() == example(
                "<", "connected"
            ).keys()
            await game.send(example(">", "call", call=2))
            assert await game.next("result", call=2) == example("<", "result", call=2)
            told = await bob.next("tell")
            assert (told["from"], told["text"]) == ("greeter", "hi")

        # Effects: an event to the room, a move (which the game hears back).
        await game.send(example(">", "room"))
        narrate = await alice.next("narrate")
        assert unstamped(narrate) == unstamped(example("alice", "narrate"))
        await game.send(example(">", "move"))
        assert await game.next("moved") == example("<", "moved")
        assert (await alice.next("arrive"))["room"] == "tavern"

        # The player leaves.
        await alice.close()
        assert await game.next("disconnected", player="alice") == example("<", "disconnected")


async def test_a_wrong_token_is_closed_with_1008(external: Any) -> None:
    gateway = external()
    async with link(gateway) as game:
        await game.send(dict(example(">", "hello"), token="not-the-secret"))
        with pytest.raises(ConnectionClosed):
            await game.next("sync")
        assert (game.ws.close_code, game.ws.close_reason) == (
            1008,
            "hello with the link's token first",
        )


async def test_commands_sent_before_any_game_are_answered_in_order_once_one_is_active(
    external: Any,
) -> None:
    gateway = external()
    async with gateway.player("alice") as alice:
        await alice.send(op="greet", name="bob", id=1)
        await alice.send(op="greet", name="carol", id=2)
        async with attached(gateway) as game:  # the commands waited for it
            first, second = await game.next("command"), await game.next("command")
            names = [(command["id"], command["args"]["name"]) for command in (first, second)]
            assert names == [(1, "bob"), (2, "carol")]
            for command in (first, second):
                reply = example(">", "reply")
                reply["seq"] = command["seq"]
                reply["fields"] = {
                    "text": f"Hello, {command['args']['name']}!",
                    "id": command["id"],
                }
                await game.send(reply, {"type": "done", "seq": command["seq"]})
            answers = [await alice.next("greeting"), await alice.next("greeting")]
            assert [answer["id"] for answer in answers] == [1, 2]
            assert answers[0]["seq"] < answers[1]["seq"]


async def test_a_command_that_waits_past_the_queue_seconds_gets_game_unavailable(
    external: Any,
) -> None:
    gateway = external(game_queue_seconds="0.5")
    async with gateway.player("alice") as alice:
        sent = time.monotonic()
        await alice.send(op="greet", name="bob", id=3)
        error = await alice.next("error")
        assert time.monotonic() - sent >= 0.45
        assert error == example("alice", "error", code="game_unavailable")  # retry_after 2.0


async def test_a_new_game_takes_over_with_the_state_the_old_one_saved(external: Any) -> None:
    gateway = external()
    async with gateway.player("alice") as alice, attached(gateway) as old:
        await old.send(example(">", "state"))
        await old.send(example(">", "call", call=1))  # answered once the state is applied
        await old.next("result", call=1)
        async with link(gateway) as new:
            await new.send(dict(example(">", "hello"), pid=4343))
            (player,) = (await new.next("sync"))["players"]
            assert player["state"] == example(">", "state")["state"]
            await alice.send(op="greet", name="bob", id=1)  # waits for the new game
            await new.send(example(">", "ready"))
            assert await old.next("retire") == example("<", "retire")
            await new.next("active")
            command = await new.next("command")
            assert command["id"] == 1
            await new.send({"type": "done", "seq": command["seq"], "error": None})
            await alice.send(op="ping", id="p")  # the gateway's own, after the game's answer
            assert (await alice.next("pong"))["id"] == "p"
            assert [f for f in old.passed + old.unread if f["type"] == "command"] == []


async def test_a_game_attaches_over_a_unix_socket_only_its_user_may_open(
    external: Any, tmp_path: Path
) -> None:
    socket_path = tmp_path / "link.sock"
    gateway = external(game_link=str(socket_path))
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    async with attached(gateway) as game:
        await game.send(example(">", "call", call=1))
        assert (await game.next("result", call=1))["value"] == []


# The doc itself


def test_the_doc_is_linked_from_the_readme_or_the_embedding_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    embedding = (ROOT / "docs" / "embedding.md").read_text()
    assert "](docs/game-link.md)" in readme or "](game-link.md)" in embedding


def test_every_frame_either_side_sends_has_an_example_in_the_doc() -> None:
    from_game = {kind.__struct_config__.tag for kind in typing.get_args(frames.FromGame)}
    link_source = (ROOT / "src" / "mudgate" / "game" / "link.py").read_text()
    from_gateway = set(re.findall(r'"type": "(\w+)"', link_source))
    documented = {(sender, frame["type"]) for sender, frame in EXAMPLES}
    assert [kind for kind in sorted(from_game) if (">", kind) not in documented] == []
    assert [kind for kind in sorted(from_gateway) if ("<", kind) not in documented] == []


def test_every_game_setting_is_named_in_the_doc_with_its_default() -> None:
    text = DOC.read_text()
    for name, field in GameProcess.model_fields.items():
        variable = f"MUDGATE_{name.upper()}"
        assert f"`{variable}`" in text, variable
        if isinstance(field.default, int | float) and not isinstance(field.default, bool):
            default = f"{field.default:g}" if field.default < 1e6 else str(int(field.default))
            assert re.search(rf"`{variable}`\s+\({re.escape(default)}\b", text), variable


async def test_every_frame_with_an_id_gets_one_answer_whatever_the_game_forgets(
    external: Any,
) -> None:
    gateway = external()
    async with gateway.player("alice") as alice, attached(gateway) as game:
        await alice.send(op="greet", name="bob", id=7)
        command = await game.next("command")
        # A reply without the id, then done: the player's answer carries the frame's id.
        await game.send(
            {"type": "reply", "seq": command["seq"], "event": "greeting", "fields": {}},
            {"type": "done", "seq": command["seq"]},
        )
        assert (await alice.next("greeting"))["id"] == 7
        # No reply at all: the gateway answers ok.
        await alice.send(op="greet", name="carol", id=8)
        command = await game.next("command")
        await game.send({"type": "done", "seq": command["seq"]})
        ok = await alice.next("ok")
        assert (ok["id"], ok["op"]) == (8, "greet")


async def test_a_game_given_up_on_cannot_take_over_by_saying_ready_late(external: Any) -> None:
    gateway = external(game_start_timeout="0.5")
    async with gateway.player("alice") as alice, attached(gateway) as first:
        async with link(gateway) as late:
            await late.send(example(">", "hello"))
            await late.next("synced")
            await gateway.until(lambda state: state["failed_starts"] == 1)
            await late.send(example(">", "ready"))  # too late: it was given up on
            await alice.send(op="greet", name="bob", id=1)
            command = await first.next("command")  # the first game still answers
            await first.send({"type": "done", "seq": command["seq"]})
            assert (await alice.next("ok"))["id"] == 1
        assert gateway.game()["state"] == "ready"
