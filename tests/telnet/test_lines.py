"""Typed lines as command frames, and events as text (mudgate.render)."""

from __future__ import annotations

from typing import Any

import pytest

from mudgate.render import Renderers, bold, clean, colour, gmcp_of, strip_ansi
from mudgate.server.telnet.lines import (
    LineError,
    UnknownCommand,
    clean_line,
    command_of,
    frame_of,
    quits,
    verbs_of,
)

VERBS: dict[str, list[dict[str, Any]]] = {
    "say": [{"name": "text", "required": True, "type": "string"}],
    "tell": [
        {"name": "to", "required": True, "type": "string"},
        {"name": "text", "required": True, "type": "string"},
    ],
    "look": [],
    "roll": [
        {"name": "count", "required": True, "type": "integer"},
        {"name": "sides", "required": False, "type": "number"},
    ],
}


@pytest.mark.parametrize(
    ("line", "frame"),
    [
        ("say hello  there", {"op": "say", "text": "hello there"}),
        ("SAY hi", {"op": "say", "text": "hi"}),
        ("'hello", {"op": "say", "text": "hello"}),
        ('"hello', {"op": "say", "text": "hello"}),
        ("tell bob see you soon", {"op": "tell", "to": "bob", "text": "see you soon"}),
        ("look", {"op": "look"}),
        ("roll 3", {"op": "roll", "count": 3}),
        ("roll 3 6.5", {"op": "roll", "count": 3, "sides": 6.5}),
        ('{"op": "who"}', None),
    ],
)
def test_a_line_is_a_frame(line: str, frame: dict[str, Any] | None) -> None:
    assert frame_of(line, VERBS) == frame


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("xyzzy", "unknown command 'xyzzy'"),
        ("tell bob", "usage: tell TO TEXT"),
        ("say", "usage: say TEXT"),
        ("roll many", "count is a number: usage: roll COUNT [sides]"),
    ],
)
def test_a_line_that_is_no_command_says_what_would_be(line: str, message: str) -> None:
    with pytest.raises(LineError, match=message.replace("[", r"\[")):
        frame_of(line, VERBS)


def test_lines_are_cleaned() -> None:
    assert clean_line(b"  hello\tworld \x07\x1b[2J ") == "hello world [2J"
    assert clean_line(b"helo\x08lo\x7f\x7f\x7f\x7f\x7f\x7f\x7fbye") == "bye"
    assert clean_line(b"caf\xc3\xa9 \xff") == "café \ufffd"


def test_default_renderers() -> None:
    renderers = Renderers()
    say = renderers.render({"type": "event", "event": "say", "from": "bob", "text": "hi"})
    assert say is not None
    assert strip_ansi(say) == "bob says: hi"
    room = renderers.render(
        {
            "type": "event",
            "event": "room",
            "room": "hall",
            "title": "The Hall",
            "description": "Stone.",
            "exits": ["north"],
            "occupants": [],
        }
    )
    assert room is not None
    assert strip_ansi(room) == "The Hall\nStone.\nExits: north\nHere: nobody"
    error = renderers.render({"type": "error", "code": "x", "message": "no\x1b[2J"})
    assert strip_ansi(error or "") == "! no[2J"
    assert renderers.render({"type": "event", "event": "pong"}) is None
    assert renderers.render({"type": "event", "event": "odd", "text": "as is"}) == "as is"
    assert renderers.render({"type": "event", "event": "odd", "n": 1, "seq": 3}) == '[odd] {"n":1}'
    assert renderers.render({"type": "event", "event": "bare", "ts": 1}) == "[bare]"
    help_text = renderers.render(
        {
            "type": "event",
            "event": "help",
            "commands": [{"op": "tell", "fields": VERBS["tell"]}, {"op": "look", "fields": []}],
        }
    )
    assert help_text is not None
    assert "  tell TO TEXT\n  look" in help_text


def test_a_game_replaces_and_adds_renderers() -> None:
    game = Renderers()

    @game.event("say")
    def say(event: dict[str, Any]) -> str:
        return f"{event['from']} whispers"

    renderers = Renderers({"rolled": lambda e: f"rolled {e['total']}"})
    renderers.update(game)
    assert "say" in renderers
    assert renderers.render({"type": "event", "event": "say", "from": "x"}) == "x whispers"
    assert renderers.render({"type": "event", "event": "rolled", "total": 7}) == "rolled 7"


def test_ansi_helpers() -> None:
    assert colour("x", "red") == "\x1b[31mx\x1b[0m"
    assert strip_ansi(bold("x")) == "x"
    assert clean("a\x1b]0;title\x07b") == "a]0;titleb"
    assert clean(5) == "5"


def test_events_as_gmcp() -> None:
    def packages(event: dict[str, Any], text: str | None = None) -> list[Any]:
        return list(gmcp_of({"type": "event", **event}, text))

    assert packages({"event": "gmcp", "package": "Char.Vitals", "data": {"hp": 1}}) == [
        ("Char.Vitals", {"hp": 1})
    ]
    assert packages({"event": "gmcp", "package": ""}) == []
    room = packages({"event": "room", "room": "hall", "exits": ["up"], "occupants": ["a"]})
    assert room[0] == (
        "Room.Info",
        {"num": "hall", "name": "hall", "area": "", "desc": "", "exits": {"up": "up"}},
    )
    assert room[1] == ("Room.Players", [{"name": "a", "fullname": "a"}])
    chat = packages({"event": "chat", "channel": "ooc", "from": "b"}, "\x1b[35m[ooc]\x1b[0m b: x")
    assert chat[0] == ("Comm.Channel.Text", {"channel": "ooc", "talker": "b", "text": "[ooc] b: x"})
    assert packages({"event": "told", "to": "c"})[0][1]["channel"] == "tell"
    assert packages({"event": "arrive", "player": "d"})[0] == (
        "Room.AddPlayer",
        {"name": "d", "fullname": "d"},
    )
    assert packages({"event": "depart", "player": "d"})[0] == ("Room.RemovePlayer", "d")
    assert packages({"event": "welcome", "player": "e"})[0][0] == "Char.Name"
    assert packages({"event": "who"}) == [("Mudgate.Event", {"type": "event", "event": "who"})]


def test_a_line_becomes_the_frame_to_dispatch_and_quit_ends_unless_the_game_has_one() -> None:
    assert verbs_of([{"op": "look", "fields": []}]) == {"look": []}
    assert command_of("tell bob hi", VERBS) == b'{"op":"tell","to":"bob","text":"hi"}'
    assert command_of('{"op": "look"}', VERBS) == '{"op": "look"}'
    with pytest.raises(UnknownCommand):
        command_of("dance", VERBS)
    assert quits("QUIT", VERBS)
    assert quits("logout", VERBS)
    assert not quits("quit", {**VERBS, "quit": []})


def test_a_renderer_that_fails_shows_the_fields_instead(caplog: pytest.LogCaptureFixture) -> None:
    renderers = Renderers()

    @renderers.event("say")
    def broken(event: dict[str, Any]) -> str:
        raise KeyError("oops")

    shown = renderers.render({"type": "event", "event": "say", "from": "a", "text": "hi"})
    assert shown == "hi"
    assert "the renderer of 'say' failed" in caplog.text


def test_clean_removes_c1_controls_too() -> None:
    assert clean("a\x9b2Jb\x85c") == "a2Jbc"
