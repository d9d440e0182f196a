"""How an event looks to a classic MUD client: a line of text with ANSI colour, and GMCP.

WebSocket and SSE clients get events as JSON. A telnet client (Mudlet, TinTin++, plain
telnet) gets each event as text, through a renderer per event; a game replaces any of them,
or adds its own::

    renderers = Renderers()

    @renderers.event("rolled")
    def rolled(event: dict[str, Any]) -> str:
        return f"{bold(event['player'])} rolls {event['dice']}: {event['total']}"

A renderer returns the text (``\\n`` between lines), or None to show nothing; it is given the
event as its JSON object, and the same text goes to every telnet player who gets the event,
so it must not depend on who reads it. An event with no renderer shows its ``text`` field if it
has one, else its fields. ``gmcp_of`` says which GMCP messages carry an event to a client that
speaks GMCP (``Room.Info``, ``Comm.Channel.Text``...); an event named ``gmcp`` (with
``package`` and ``data``) is a game's own GMCP message, sent as it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

logger = logging.getLogger("mudgate.render")

__all__ = [
    "GMCP_EVENT",
    "Renderer",
    "Renderers",
    "bold",
    "colour",
    "event_of",
    "gmcp_of",
    "strip_ansi",
]

Renderer = Callable[[dict[str, Any]], "str | None"]

# The event a game sends to speak GMCP itself: ctx.reply("gmcp", package="Char.Vitals",
# data={"hp": 10}). Over JSON it arrives as any event.
GMCP_EVENT = "gmcp"

_ANSI = {
    "black": 30,
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "magenta": 35,
    "cyan": 36,
    "white": 37,
}
_CSI = re.compile(r"\x1b\[[0-9;]*m")
# Terminal controls a player could smuggle into what others read (cursor moves, title
# changes, a bell): everything below space but tab and newline, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0, DEL and C1 (CSI is \x9b)


def colour(text: str, name: str) -> str:
    """``text`` in one of the eight ANSI colours."""
    return f"\x1b[{_ANSI[name]}m{text}\x1b[0m"


def bold(text: str) -> str:
    return f"\x1b[1m{text}\x1b[0m"


def strip_ansi(text: str) -> str:
    """``text`` without its colour codes, for a client that cannot show them."""
    return _CSI.sub("", text)


def clean(value: object) -> str:
    """A field as text a terminal shows as it is: what a player typed cannot move the cursor,
    clear the screen or ring the bell on others' terminals."""
    return _CONTROL.sub("", value if isinstance(value, str) else str(value))


def event_of(data: bytes) -> dict[str, Any] | None:
    """An encoded server-to-client message (``Outgoing.data``) as the JSON object renderers
    are given; None if it is not one."""
    try:
        event = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return event if isinstance(event, dict) else None


class Renderers:
    """The text renderer of each event (see the module's docstring)."""

    def __init__(self, renderers: Mapping[str, Renderer] | None = None) -> None:
        self._renderers: dict[str, Renderer] = dict(DEFAULT_RENDERERS)
        if renderers:
            self._renderers.update(renderers)

    def event(self, name: str) -> Callable[[Renderer], Renderer]:
        """Decorator: ``render`` shows events named ``name`` (in place of the default)."""

        def decorator(render: Renderer) -> Renderer:
            self._renderers[name] = render
            return render

        return decorator

    def update(self, other: Renderers) -> None:
        """Take ``other``'s renderers in place of these (a game's over the defaults)."""
        self._renderers.update(other._renderers)

    def __contains__(self, name: str) -> bool:
        return name in self._renderers

    def render(self, event: dict[str, Any]) -> str | None:
        """The text of ``event`` (a server-to-client message as its JSON object)."""
        if event.get("type") == "error":
            return colour(f"! {clean(event.get('message', ''))}", "red")
        name = event.get("event")
        render = self._renderers.get(name) if isinstance(name, str) else None
        if render is None:
            return _fallback(event)
        try:
            return render(event)
        except Exception:
            # A game's renderer that fails must not stop the event reaching the others in
            # its room (rendering happens as it is sent): its fields are shown instead.
            logger.exception("the renderer of %r failed; its fields are shown", name)
            return _fallback(event)


def _fallback(event: dict[str, Any]) -> str | None:
    if "text" in event:
        return clean(event["text"])
    fields = {k: v for k, v in event.items() if k not in ("type", "event", "ts", "seq", "id")}
    name = clean(event.get("event", "?"))
    return f"[{name}] {clean(msgspec.json.encode(fields).decode())}" if fields else f"[{name}]"


def _names(values: object) -> str:
    if not isinstance(values, list) or not values:
        return "nobody"
    return ", ".join(clean(value) for value in values)


def _usage(command: dict[str, Any]) -> str:
    words = [clean(command.get("op", "?"))]
    for field in command.get("fields", ()):
        name = clean(field.get("name", "?"))
        words.append(name.upper() if field.get("required") else f"[{name}]")
    return " ".join(words)


def _welcome(event: dict[str, Any]) -> str:
    player, room = bold(clean(event.get("player", ""))), bold(clean(event.get("room", "")))
    return f"Welcome, {player}. You are in {room}; type {bold('help')} for the commands."


def _room(event: dict[str, Any]) -> str:
    lines = [colour(bold(clean(event.get("title") or event.get("room", ""))), "cyan")]
    if event.get("description"):
        lines.append(clean(event["description"]))
    exits = event.get("exits")
    if isinstance(exits, list) and exits:
        lines.append(colour("Exits: " + ", ".join(clean(e) for e in exits), "green"))
    lines.append(f"Here: {_names(event.get('occupants'))}")
    return "\n".join(lines)


def _help(event: dict[str, Any]) -> str:
    commands = event.get("commands")
    listed = commands if isinstance(commands, list) else []
    usage = "\n".join(f"  {_usage(c)}" for c in listed if isinstance(c, dict))
    return f"Commands (words fill the fields in order; the last takes the rest):\n{usage}"


def _quiet(event: dict[str, Any]) -> None:
    return None


DEFAULT_RENDERERS: dict[str, Renderer] = {
    "welcome": _welcome,
    "room": _room,
    "say": lambda e: (
        f"{colour(clean(e.get('from', '')), 'yellow')} says: {clean(e.get('text', ''))}"
    ),
    "chat": lambda e: (
        f"{colour('[' + clean(e.get('channel', '')) + ']', 'magenta')} "
        f"{clean(e.get('from', ''))}: {clean(e.get('text', ''))}"
    ),
    "tell": lambda e: (
        f"{colour(clean(e.get('from', '')), 'magenta')} tells you: {clean(e.get('text', ''))}"
    ),
    "told": lambda e: f"You tell {clean(e.get('to', ''))}: {clean(e.get('text', ''))}",
    "narrate": lambda e: clean(e.get("text", "")),
    "arrive": lambda e: f"{clean(e.get('player', ''))} arrives.",
    "depart": lambda e: f"{clean(e.get('player', ''))} leaves.",
    "who": lambda e: f"Online ({clean(e.get('count', 0))}): {_names(e.get('players'))}",
    "help": _help,
    "subscribed": lambda e: f"You listen to [{clean(e.get('channel', ''))}].",
    "unsubscribed": lambda e: f"You stop listening to [{clean(e.get('channel', ''))}].",
    "game_restarting": lambda e: colour("-- the game is restarting; type on, it waits --", "blue"),
    "game_ready": lambda e: colour("-- the game is back --", "blue"),
    "pong": _quiet,
    "ok": _quiet,
    GMCP_EVENT: _quiet,  # a game's own GMCP: nothing to show as text
}


# GMCP


def _talk(event: dict[str, Any], channel: str, text: str | None) -> tuple[str, Any]:
    return "Comm.Channel.Text", {
        "channel": channel,
        "talker": event.get("from", ""),
        "text": strip_ansi(text or ""),
    }


def gmcp_of(
    event: dict[str, Any], text: str | None, *, whole: bool = True
) -> Iterator[tuple[str, Any]]:
    """The GMCP messages (package, data) that carry ``event``, whose rendered ``text`` is
    given: the packages MUD clients know (IRE's ``Char``, ``Room`` and ``Comm``), then, with
    ``whole``, the whole event as ``Mudgate.Event`` (for clients that asked for the
    ``Mudgate`` package)."""
    name = event.get("event")
    if name == GMCP_EVENT:
        package = event.get("package")
        if isinstance(package, str) and package:
            yield package, event.get("data")
        return
    if name == "welcome":
        yield "Char.Name", {"name": event.get("player"), "fullname": event.get("player")}
    elif name == "room":
        exits = event.get("exits")
        yield (
            "Room.Info",
            {
                "num": event.get("room"),
                "name": event.get("title") or event.get("room"),
                "area": event.get("area", ""),
                "desc": event.get("description", ""),
                "exits": {e: e for e in exits if isinstance(e, str)}
                if isinstance(exits, list)
                else {},
            },
        )
        occupants = event.get("occupants")
        if isinstance(occupants, list):
            yield "Room.Players", [{"name": p, "fullname": p} for p in occupants]
    elif name == "say":
        yield _talk(event, "say", text)
    elif name == "chat":
        yield _talk(event, str(event.get("channel", "")), text)
    elif name in ("tell", "told"):
        yield _talk(event, "tell", text)
    elif name == "arrive":
        yield "Room.AddPlayer", {"name": event.get("player"), "fullname": event.get("player")}
    elif name == "depart":
        yield "Room.RemovePlayer", event.get("player")
    if whole:
        yield "Mudgate.Event", event
