"""The wire protocol: frames in, events out, error and close codes.

Clients send JSON objects such as ``{"op": "say", "text": "hello"}``; the server sends
``{"type": "event", "event": ..., ...}`` and ``{"type": "error", "code": ..., ...}``. An
event is encoded once into an ``Outgoing`` and the same bytes go to every recipient.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec

__all__ = [
    "EVENT_FIELDS",
    "MAX_RESUME_BYTES",
    "RESUMED_EVENT_BYTES",
    "ChannelName",
    "CloseCode",
    "CommandError",
    "Envelope",
    "ErrorCode",
    "Outgoing",
    "PlayerId",
    "Position",
    "RequestId",
    "RoomName",
    "convert_args",
    "encode_error",
    "encode_event",
    "error_body",
    "parse_frame",
    "parse_resume",
    "restart_reason",
    "websocket_binary_frame",
    "websocket_messages",
    "websocket_text_frame",
]

# The shapes of names, shared by commands, auth and the hub (free text is text.Text).
# \Z, not $: "$" also matches before a final newline, and "lobby\n" is not a room.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z"
# What a player is told when a name does not have that shape (fields.Explainer).
_NAME = msgspec.Meta(
    pattern=NAME_PATTERN,
    description="1-32 letters, digits, _, . or -, starting with a letter or digit",
)
PlayerId = Annotated[str, _NAME]
"""A player's id, as the player chose it (case kept): for a game's field that names a player."""
RoomName = Annotated[str, _NAME]
ChannelName = Annotated[str, _NAME]
RequestId = str | int | None


class CloseCode(enum.IntEnum):
    """Why the server closed a connection, and what the client should do about it."""

    NORMAL = 1000
    """The session ended normally. Do not reconnect unless the user asks."""
    GOING_AWAY = 1001
    """The server is shutting down. Reconnect after a short, jittered delay."""
    POLICY_VIOLATION = 1008
    """The client kept sending bad frames. Fix the client; do not reconnect in a loop."""
    MESSAGE_TOO_BIG = 1009
    """A frame was larger than max_message_bytes. Send smaller frames."""
    INTERNAL_ERROR = 1011
    """The server failed (or the client stopped answering pings). Reconnect with backoff."""
    SERVICE_RESTART = 1012
    """The server is restarting. Reconnect (mudgate's clients do at once; spread your own
    client's reconnects over a short random delay, so not every player returns at once)."""
    TRY_AGAIN_LATER = 1013
    """The server is full or under memory pressure. Reconnect with backoff."""
    UNAUTHORIZED = 4001
    """The token was missing, invalid or expired. Get a new token, then reconnect."""
    DISCONNECTED = 4003
    """An operator disconnected this player (the dashboard, or the admin API). Do not
    reconnect automatically."""
    SLOW_CONSUMER = 4008
    """The client did not read fast enough and its outbox filled. Reconnect; read faster."""
    REPLACED = 4009
    """The player opened more connections than allowed; this, the oldest, was closed."""
    RECYCLED = 4010
    """The connection reached max_connection_age. Reconnect at once."""
    IDLE = 4011
    """Nothing was received for idle_timeout. Reconnect when the user is back."""
    RATE_LIMITED = 4029
    """Too many connection attempts, or messages. Reconnect after the delay the server asked
    for."""

    @property
    def reason(self) -> str:
        return self.name.lower().replace("_", " ")


def restart_reason(window_seconds: float) -> str:
    """The reason of a 1012 (``SERVICE_RESTART``) at shutdown, naming the window (seconds)
    over which clients spread their reconnects; they find it with
    ``r"reconnect within ([0-9.]+) s"`` (docs/protocol.md). Never in exponent notation, and
    well within a close frame's 123 bytes for any window the settings allow (at most 300)."""
    window = f"{window_seconds:.3f}".rstrip("0").rstrip(".")
    return f"server restarting; reconnect within {window} s"


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` event or of an HTTP error body."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    FRAME_TOO_BIG = "frame_too_big"
    UNKNOWN_OP = "unknown_op"
    INVALID_ARGS = "invalid_args"
    PLAYER_NOT_FOUND = "player_not_found"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    # A resume (``?resume=``, ``Last-Event-ID``) that is not one, or names what the player
    # may not read.
    INVALID_RESUME = "invalid_resume"
    FORBIDDEN_TOPIC = "forbidden_topic"
    NOT_SUBSCRIBED = "not_subscribed"
    NOT_CONNECTED = "not_connected"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    MAILBOX_FULL = "mailbox_full"
    # The game (in a process of its own) is restarting or down; the error says when to retry.
    GAME_UNAVAILABLE = "game_unavailable"
    INTERNAL = "internal"
    # The protocol layer's refusals of a request that is not one.
    BAD_REQUEST = "bad_request"
    REQUEST_TIMEOUT = "request_timeout"
    URI_TOO_LONG = "uri_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"


class CommandError(Exception):
    """A frame or command the server will not act on; becomes an ``error`` event.

    ``retry_after`` (seconds) tells a rate-limited client when to try again.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        request_id: RequestId = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class Outgoing:
    """One encoded event: the same object, and the same bytes, go to every recipient.

    What each transport writes (a WebSocket frame, an SSE record) is built on first use and
    then shared too, so a broadcast to N players frames its message once, not N times.
    """

    __slots__ = ("_frame", "_sse", "_text", "_views", "data", "epoch", "event", "offset", "topic")

    def __init__(self, event: str, data: bytes) -> None:
        self.event = event
        self.data = data
        # A room's or channel's event: its topic, and its place there (the same as in
        # ``data``), set by whoever numbered it; 0 and None for every other message.
        self.topic: str | None = None
        self.offset = 0
        self.epoch = ""
        self._frame: bytes | None = None
        self._sse: bytes | None = None
        self._text: str | None = None
        self._views: dict[str, bytes] | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Outgoing({self.event!r}, {self.data!r})"

    @classmethod
    def sse_comment(cls, comment: str) -> Outgoing:
        """An SSE comment line (a keep-alive); not an event, and never sent on a WebSocket."""
        message = cls("", b"")
        message._sse = f": {comment}\n\n".encode()
        return message

    @classmethod
    def close_record(cls, code: CloseCode, reason: str) -> Outgoing:
        """The last record of an SSE stream: the close code and reason a WebSocket would get."""
        return cls("close", _encoder.encode({"type": "close", "code": int(code), "reason": reason}))

    @property
    def text(self) -> str:
        """The event as text, for a server that sends ASGI text frames (decoded once)."""
        if self._text is None:
            self._text = self.data.decode()
        return self._text

    def view(self, name: str, build: Callable[[Outgoing], bytes]) -> bytes:
        """What a transport writes for this event, built by ``build`` on first use under
        ``name`` and then shared: telnet's text with or without colour, its GMCP."""
        views = self._views
        if views is None:
            views = self._views = {}
        found = views.get(name)
        if found is None:
            found = views[name] = build(self)
        return found

    def drop_views(self) -> None:
        """Forget the views built so far (a broadcast, once sent): a recipient that still
        queues the event builds its own, so queued events hold no more than their bytes."""
        self._views = None

    @property
    def frame(self) -> bytes:
        """The event as an unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2), what a
        server writes to any client that did not negotiate an extension."""
        if self._frame is None:
            self._frame = websocket_text_frame(self.data)
        return self._frame

    @property
    def sse(self) -> bytes:
        """The event as a Server-Sent-Events record (built on first use, then shared)."""
        if self._sse is None:
            self._sse = b"event: " + self.event.encode() + b"\ndata: " + self.data + b"\n\n"
        return self._sse


# The first byte of a final frame: FIN and the opcode (RFC 6455 section 5.2).
_TEXT = 0x81
_BINARY = 0x82


def _websocket_frame(first: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + length.to_bytes(8, "big")
    return header + payload


def websocket_text_frame(payload: bytes) -> bytes:
    """One final text frame from the server: FIN and the opcode, then the payload's length in
    7, 16 or 64 bits (no mask: only clients mask). ``payload`` is UTF-8."""
    return _websocket_frame(_TEXT, payload)


def websocket_binary_frame(payload: bytes) -> bytes:
    """One final binary frame from the server, built as ``websocket_text_frame`` builds one."""
    return _websocket_frame(_BINARY, payload)


def websocket_messages(frames: bytes) -> Iterator[tuple[bool, bytes]]:
    """The messages in ``frames`` that ``websocket_text_frame`` and ``websocket_binary_frame``
    built, in order: (whether it is text, its payload). For a server that takes messages, not
    frames (an ASGI ``websocket.send`` each)."""
    start = 0
    while start < len(frames):
        first, length = frames[start], frames[start + 1]
        head = 2
        if length >= 126:
            head = 4 if length == 126 else 10
            length = int.from_bytes(frames[start + 2 : start + head], "big")
        end = start + head + length
        yield first == _TEXT, frames[start + head : end]
        start = end


class Envelope(msgspec.Struct, frozen=True):
    """The envelope every client frame shares; the op's own fields are checked by its command."""

    op: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    id: Annotated[str, msgspec.Meta(max_length=64)] | int | None = None


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def parse_frame(raw: str | bytes) -> tuple[Envelope, dict[str, Any]]:
    """Decode a client frame into its envelope and its fields; raises CommandError."""
    try:
        fields = _decoder.decode(raw)
    except msgspec.ValidationError as error:  # valid JSON msgspec will not hold (1e400)
        raise CommandError(ErrorCode.BAD_JSON, f"frame cannot be read: {error}") from None
    except msgspec.DecodeError:
        raise CommandError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    except RecursionError:
        # `[` * 1000 fits in a small frame; msgspec refuses to recurse that deep.
        raise CommandError(ErrorCode.BAD_JSON, "frame is nested too deeply") from None
    if not isinstance(fields, dict):
        raise CommandError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    request_id = fields.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = None
    try:
        frame = msgspec.convert(fields, Envelope)
    except msgspec.ValidationError as error:
        raise CommandError(ErrorCode.BAD_FRAME, str(error), request_id) from None
    return frame, fields


ArgsT = TypeVar("ArgsT")


def convert_args(
    fields: dict[str, Any],
    args_type: type[ArgsT],
    frame: Envelope,
    explain: Callable[[str], str],
) -> ArgsT:
    """Check an op's fields against its argument Struct; raises CommandError, its message
    msgspec's put in a player's words by ``explain`` (a ``fields.Explainer``)."""
    try:
        return msgspec.convert(fields, args_type)
    except msgspec.ValidationError as error:
        raise CommandError(ErrorCode.INVALID_ARGS, explain(str(error)), frame.id) from None
    except RecursionError:
        raise CommandError(
            ErrorCode.INVALID_ARGS, "a field is nested too deeply", frame.id
        ) from None


# The fields every event carries, which the hub sets: a game's own fields take other names.
EVENT_FIELDS = frozenset({"type", "event", "ts", "seq"})
# What a room event and a channel event add to them (their topic's place: offset, epoch).
ROOM_FIELD = frozenset({"room", "offset", "epoch"})
CHANNEL_FIELD = frozenset({"channel", "offset", "epoch"})


def refuse_fields(event: str, fields: Mapping[str, Any], taken: frozenset[str]) -> None:
    """Raise ValueError if a game's ``fields`` use a name the hub sets itself (``taken``).
    Every event passes here: the usual answer is one set test, with nothing allocated."""
    if taken.isdisjoint(fields):
        return
    clash = sorted(taken.intersection(fields))
    raise ValueError(
        f"event {event!r}: the hub sets {', '.join(map(repr, clash))} itself; "
        "give the game's own field another name"
    )


def encode_event(event: str, fields: dict[str, Any]) -> Outgoing:
    """Encode ``{"type": "event", "event": event, **fields}`` once."""
    return Outgoing(event, _encoder.encode({"type": "event", "event": event, **fields}))


def error_body(code: ErrorCode, message: str, retry_after: float | None = None) -> bytes:
    """The body of every HTTP error: ``{"error": {"code": ..., "message": ...}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    return _encoder.encode({"error": error})


def encode_error(
    code: ErrorCode,
    message: str,
    request_id: RequestId = None,
    retry_after: float | None = None,
    topic: str | None = None,
) -> Outgoing:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        body["id"] = request_id
    if retry_after is not None:
        body["retry_after"] = retry_after
    if topic is not None:  # the room or channel a resume could not have
        body["topic"] = topic
    return Outgoing("error", _encoder.encode(body))


# Resume: where a client was in each room and channel when it lost its connection.

# The longest resume string a client may send (``?resume=``, ``Last-Event-ID``).
MAX_RESUME_BYTES = 2048
# The longest a ``resumed`` event encodes to: a name of 32, an offset and a seq of 19 digits,
# an epoch of 16, the longest reason. A resume keeps room for one per topic in the outbox.
RESUMED_EVENT_BYTES = 256
_EPOCH = re.compile(r"[0-9a-f]{1,16}\Z")
# An offset has at most 18 digits (it fits in a signed 64-bit integer, as Redis keeps it).
_MAX_OFFSET_DIGITS = 18
_NAME_RE = re.compile(NAME_PATTERN)


class Position(NamedTuple):
    """A client's place in one topic: the offset of the last event it got there, in ``epoch``."""

    topic: str  # "room:NAME" or "channel:NAME" (or anything else, which the hub refuses)
    offset: int
    epoch: str

    def __str__(self) -> str:
        return f"{self.topic}:{self.offset}:{self.epoch}"


def parse_resume(text: str, max_entries: int) -> list[Position]:
    """The positions in a resume string (``room:hall:41:9f86d081,channel:ooc:7:0c1d2e3f``);
    ValueError saying what is wrong with it. Kinds are not checked here (the hub refuses a
    topic the player may not read); the shape of every entry is. The empty string names none."""
    if len(text) > MAX_RESUME_BYTES or len(text.encode(errors="surrogatepass")) > MAX_RESUME_BYTES:
        raise ValueError(f"longer than {MAX_RESUME_BYTES} bytes")
    if not text:
        return []
    entries = text.split(",")
    if len(entries) > max_entries:
        raise ValueError(f"more than {max_entries} entries")
    positions: list[Position] = []
    for entry in entries:
        if not entry:
            raise ValueError("an empty entry (two commas in a row, or one at either end)")
        # No part may hold a colon, so an entry has exactly three.
        parts = entry.split(":")
        if len(parts) != 4 or not parts[0] or not _NAME_RE.match(parts[1]):
            raise ValueError(f"{entry[:80]!r} is not TOPIC:OFFSET:EPOCH")
        kind, name, offset, epoch = parts
        if not offset.isascii() or not offset.isdigit():
            raise ValueError(f"{entry[:80]!r}: the offset is not a whole number")
        if len(offset) > _MAX_OFFSET_DIGITS:
            raise ValueError(f"{entry[:80]!r}: the offset is too large")
        if epoch and not _EPOCH.match(epoch):
            raise ValueError(f"{entry[:80]!r}: the epoch is not hex")
        positions.append(Position(f"{kind}:{name}", int(offset), epoch))
    return positions
