"""The game link's frames (docs/game-link.md): JSON objects with a ``type``, one per WebSocket
text message or several in a JSON array.

What the game sends is checked here, as a client's frames are: a frame that does not match is
refused by name, never half-applied.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "CALL_METHODS",
    "Call",
    "ChannelEvent",
    "Done",
    "ErrorInfo",
    "Failed",
    "FromGame",
    "Hello",
    "Move",
    "Ready",
    "Reply",
    "RoomEvent",
    "Send",
    "State",
    "decode_from_game",
    "encode",
    "message_of",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Fields = dict[str, Any]
CALL_METHODS = ("players_in", "who", "tell", "hold_lease")


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    pass


class Hello(_Frame, tag="hello"):
    """The game's first frame: its secret, and the ops it answers."""

    token: str
    ops: list[dict[str, Any]] = []
    removed: list[str] = []
    name: str = "game"
    pid: int = 0


class Failed(_Frame, tag="failed"):
    """Instead of ``hello``: the game could not start (it could not be imported, say)."""

    token: str
    error: str
    pid: int = 0


class Ready(_Frame, tag="ready"):
    """The game has taken the sync and is ready for commands."""


class ErrorInfo(msgspec.Struct):
    code: str
    message: str
    retry_after: float | None = None


class Done(_Frame, tag="done"):
    """Command ``seq`` is over (with the error it was answered with, if any)."""

    seq: int
    error: ErrorInfo | None = None


class Reply(_Frame, tag="reply"):
    """An event to the connection command ``seq`` came from."""

    seq: int
    event: EventName
    fields: Fields = {}


class RoomEvent(_Frame, tag="room"):
    room: Name
    event: EventName
    fields: Fields = {}


class ChannelEvent(_Frame, tag="channel"):
    channel: Name
    event: EventName
    fields: Fields = {}


class Send(_Frame, tag="send"):
    player: Name
    event: EventName
    fields: Fields = {}
    sender: str | None = None


class Move(_Frame, tag="move"):
    player: Name
    room: Name


class State(_Frame, tag="state"):
    player: Name
    state: Fields


class Call(_Frame, tag="call"):
    """A question whose answer comes back as ``result`` with the same ``call``."""

    call: int
    method: Literal["players_in", "who", "tell", "hold_lease"]
    args: Fields = {}


FromGame = (
    Hello | Failed | Ready | Done | Reply | RoomEvent | ChannelEvent | Send | Move | State | Call
)

_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


def message_of(frames: list[bytes]) -> bytes:
    """One link message of encoded ``frames``: the frame itself, or a JSON array of them."""
    return frames[0] if len(frames) == 1 else b"[" + b",".join(frames) + b"]"


def decode_from_game(message: str | bytes) -> tuple[list[FromGame], list[str]]:
    """The frames of one message from the game, and what is wrong with each frame refused (a
    frame that does not fit is refused alone, the others of its message kept); ValueError if
    the message is not JSON at all."""
    try:
        raw = _decoder.decode(message)
    except (msgspec.DecodeError, RecursionError) as error:
        raise ValueError(f"not JSON: {error}") from None
    frames: list[FromGame] = []
    refused: list[str] = []
    for item in raw if isinstance(raw, list) else [raw]:
        try:
            frames.append(msgspec.convert(item, FromGame))
        except msgspec.ValidationError as error:
            refused.append(str(error))
    return frames, refused
