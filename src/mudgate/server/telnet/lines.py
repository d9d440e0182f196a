"""A typed line as a command frame: ``tell bob hi there`` is ``{"op": "tell", "to": "bob",
"text": "hi there"}``.

The first word is the op; the words after it fill the op's fields in the order the command
registry lists them (its ``help``), and the last field takes the rest of the line, as on the
play page. ``'hello`` (or ``"hello``) says hello, as on most MUDs; a line starting with ``{`` is
a JSON frame as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ...connection import Connection
from ...hub import Hub
from ...protocol import CloseCode, ErrorCode, encode_error

__all__ = [
    "LineError",
    "UnknownCommand",
    "clean_line",
    "command_of",
    "frame_of",
    "quits",
    "usage",
    "verbs_of",
]

_CONTROLS = re.compile(r"[\x00-\x07\x0b-\x1f\x7f]")


class LineError(Exception):
    """The line is not a command; the message says what would be."""


class UnknownCommand(LineError):
    """The line's first word is no command."""


# What ends a session when the game has no ``quit`` of its own.
QUIT_WORDS = frozenset({"quit", "logout"})

_encoder = msgspec.json.Encoder()


def verbs_of(schema: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each op and its fields in order, from ``CommandRegistry.schema()``: what ``frame_of``
    fills a line into."""
    return {entry["op"]: entry["fields"] for entry in schema}


def quits(line: str, verbs: Mapping[str, Any]) -> bool:
    """Whether ``line`` ends the session: ``quit`` or ``logout``, unless the game answers a
    ``quit`` of its own."""
    return line.lower() in QUIT_WORDS and "quit" not in verbs


def clean_line(data: bytes) -> str:
    """A line as the player meant it: UTF-8 (undecodable bytes replaced), backspaces (BS or
    DEL, from a client in character mode) applied, other control characters and surrounding
    blanks removed."""
    text = data.decode("utf-8", "replace")
    if "\x08" in text or "\x7f" in text:
        kept: list[str] = []
        for char in text:
            if char in "\x08\x7f":
                if kept:
                    kept.pop()
            else:
                kept.append(char)
        text = "".join(kept)
    return _CONTROLS.sub("", text).replace("\t", " ").strip()


def usage(op: str, fields: Iterable[Mapping[str, Any]]) -> str:
    words = [op]
    for field in fields:
        name = str(field.get("name", "?"))
        words.append(name.upper() if field.get("required") else f"[{name}]")
    return " ".join(words)


def frame_of(line: str, verbs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The frame ``line`` stands for, given each op's fields (``verbs``); None for a JSON
    frame, sent as typed. Raises LineError for a line that is no command."""
    if line.startswith("{"):
        return None
    if line[0] in "'\"":
        return {"op": "say", "text": line[1:].strip()}
    op, _, rest = line.partition(" ")
    op = op.lower()
    fields = verbs.get(op)
    if fields is None:
        shown = op if len(op) <= 32 else op[:32] + "..."  # a typo is not sent back whole
        raise UnknownCommand(
            f"unknown command {shown!r}: type help for the commands, or 'TEXT to say it"
        )
    frame: dict[str, Any] = {"op": op}
    words = rest.split()
    for i, field in enumerate(fields):
        name = str(field["name"])
        last = i == len(fields) - 1  # the last field takes the rest of the line
        value = " ".join(words[i:]) if last else (words[i] if i < len(words) else "")
        if not value:
            continue
        if field.get("type") in ("integer", "number"):
            try:
                frame[name] = int(value) if field["type"] == "integer" else float(value)
            except ValueError:
                raise LineError(f"{name} is a number: usage: {usage(op, fields)}") from None
        else:
            frame[name] = value
    missing = [f for f in fields if f.get("required") and f["name"] not in frame]
    if missing:
        raise LineError(f"usage: {usage(op, fields)}")
    return frame


def command_of(line: str, verbs: Mapping[str, list[dict[str, Any]]]) -> str | bytes:
    """The frame to dispatch for ``line``: a JSON frame as typed, else what ``frame_of`` makes
    of it, encoded. Raises LineError as ``frame_of`` does."""
    frame = frame_of(line, verbs)
    return line if frame is None else _encoder.encode(frame)


def answer_line_error(hub: Hub, conn: Connection, error: LineError) -> None:
    """A line that is no command: charged to the player's message rate as a command is (a
    flood of typos is rate-limited like any other), then told through the outbox, as an error
    that does not count as a malformed frame (a typo is not an attack)."""
    wait, over_limit = hub.charge_message(conn.player_id)
    if over_limit:
        conn.close(CloseCode.RATE_LIMITED, "too many messages")
    if wait:
        message = f"too many messages: wait {wait:.1f} s"
        conn.send(encode_error(ErrorCode.RATE_LIMITED, message, None, round(wait, 3)))
        return
    code = ErrorCode.UNKNOWN_OP if isinstance(error, UnknownCommand) else ErrorCode.INVALID_ARGS
    conn.send(encode_error(code, str(error)))
