"""What nodes write to Redis and read back: every format, and the checks that turn away what
a mudgate node would not have written.

Redis is shared, and whatever is in it may be wrong: written by another version, by a tool,
or by someone who reached Redis. So nothing read from it is trusted: a message must be an
event a node could have encoded (a JSON object, no larger than an outbox can hold), a player
id and a room must be names, a node's summary must have the summary's shape. What fails
raises ``Invalid``, saying which kind of record it was; the backplane counts it, logs the
first of each kind, and skips it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from ..protocol import NAME_PATTERN, Outgoing

__all__ = [
    "EVICT",
    "KEPT",
    "MESSAGE",
    "Invalid",
    "NodeSummary",
    "PresenceRecord",
    "decode_entry",
    "decode_eviction",
    "decode_kept",
    "decode_message",
    "decode_name",
    "decode_node_id",
    "decode_pending",
    "decode_position",
    "decode_presence",
    "decode_summary",
    "encode_eviction",
    "encode_message",
    "encode_pending",
    "encode_presence",
    "encode_summary",
    "stamp",
]

MESSAGE = b"m"
EVICT = b"e"
KEPT = b"k"
SEP = b"\n"

# Event names as game code writes them (``hub.event("narrate", ...)``).
_EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_NAME = re.compile(NAME_PATTERN)
# A node id is a node name, a pid and a random suffix.
MAX_NODE_ID = 200
# An epoch is a few random bytes in hex (history.new_epoch); an offset, a count of events.
_EPOCH = re.compile(rb"[0-9a-f]{1,16}\Z")
_COUNT = re.compile(rb"[0-9]{1,18}\Z")

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
AlertText = Annotated[str, msgspec.Meta(max_length=500)]


class Invalid(ValueError):
    """A record read from Redis that no mudgate node wrote; ``kind`` says which sort."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind


class _Event(msgspec.Struct):
    """What every encoded event is at least: a JSON object with a ``type``."""

    type: str


class PresenceRecord(msgspec.Struct, array_like=True):
    """One player on one node: their room and when each of their connections opened."""

    room: Name
    connected_at: Annotated[tuple[float, ...], msgspec.Meta(max_length=1000)]


class NodeMemory(msgspec.Struct):
    rss_mb: float
    percent: float
    limit_mb: float


class NodeSummary(msgspec.Struct, omit_defaults=True):
    """What a node says of itself in its lease (``GET /monitoring/cluster``)."""

    node: Annotated[str, msgspec.Meta(max_length=MAX_NODE_ID)]
    name: Annotated[str, msgspec.Meta(max_length=MAX_NODE_ID)]
    connections: Annotated[int, msgspec.Meta(ge=0)]
    players: Annotated[int, msgspec.Meta(ge=0)]
    updated_at: float | None = None
    memory: NodeMemory | None = None
    alerts: Annotated[list[AlertText], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    shedding: bool = False


_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(_Event).decode
_decode_presence = msgspec.json.Decoder(PresenceRecord).decode
_decode_summary = msgspec.json.Decoder(NodeSummary).decode


def _event(event: bytes, data: bytes, max_bytes: int, kind: str) -> Outgoing:
    try:
        name = event.decode()
    except UnicodeDecodeError:
        raise Invalid(kind, "the event name is not UTF-8") from None
    if not _EVENT.match(name):
        raise Invalid(kind, f"not an event name: {name[:64]!r}")
    if len(data) > max_bytes:
        raise Invalid(kind, f"{len(data)} bytes, more than an outbox holds ({max_bytes})")
    try:
        _decode_event(data)
    except (msgspec.DecodeError, RecursionError):
        raise Invalid(kind, "not an encoded event") from None
    return Outgoing(name, data)


# Pub/sub payloads: b"m<origin node>\n<event>\n<data>" and b"e<origin>\n<target node>\n<n>".


def encode_message(node_id: str, message: Outgoing) -> bytes:
    return MESSAGE + node_id.encode() + SEP + message.event.encode() + SEP + message.data


def decode_message(rest: bytes, max_bytes: int) -> Outgoing:
    """A message's event (what follows its origin), checked."""
    event, _, data = rest.partition(SEP)
    return _event(event, data, max_bytes, "message")


# Room and channel events kept in Redis (redis_history.py): the keep script numbers each, adds
# its "offset" and "epoch" to its JSON as the last two fields (``stamp``), keeps it in the
# topic's stream (entry "<offset>-0": t, the time in ms; e, the event; d, the stamped data)
# and publishes b"k<origin>\n<sequence>\n<offset>\n<epoch>\n<event>\n<stamped data>", the
# sequence being the origin's count of its kept publishes.


def stamp(data: bytes, offset: int, epoch: str) -> bytes:
    """``data`` (an encoded event: a JSON object) with ``"offset"`` and ``"epoch"`` as its
    last two fields, as the keep script writes it."""
    separator = b"" if data.endswith(b"{}") else b","
    return data[:-1] + separator + _position(offset, epoch)


def _position(offset: int, epoch: str) -> bytes:
    return b'"offset":%d,"epoch":"%s"}' % (offset, epoch.encode())


def decode_kept(rest: bytes, max_bytes: int) -> tuple[int, Outgoing]:
    """A kept message's sequence number (what follows its origin) and its event, numbered
    (``offset``, ``epoch``), checked."""
    parts = rest.split(SEP, 4)
    if len(parts) != 5:
        raise Invalid("kept", "not a kept message")
    sequence, offset, epoch, event, data = parts
    number = _count(sequence, "kept")
    position = _count(offset, "kept"), _epoch(epoch, "kept")
    return number, _numbered(event, data, *position, max_bytes=max_bytes, kind="kept")


def decode_position(epoch: bytes | None, latest: bytes | None) -> tuple[str, int]:
    """A topic's epoch and latest offset, as its history's meta holds them."""
    if epoch is None or latest is None:
        raise Invalid("history", "a topic's position without its epoch or latest offset")
    return _epoch(epoch, "history"), _count(latest, "history")


def decode_entry(
    entry_id: bytes, fields: dict[bytes, bytes] | None, epoch: str, max_bytes: int
) -> tuple[int, int, Outgoing]:
    """One entry of a topic's stream, kept in ``epoch``: its offset, when it was kept (ms),
    and its event, numbered."""
    offset, _, sequence = entry_id.partition(b"-")
    if sequence != b"0" or not fields:
        raise Invalid("history", f"not an entry of a topic's history: {entry_id[:40]!r}")
    number = _count(offset, "history")
    event, data = fields.get(b"e", b""), fields.get(b"d", b"")
    at = _count(fields.get(b"t", b""), "history")
    message = _numbered(event, data, number, epoch, max_bytes=max_bytes, kind="history")
    return number, at, message


def _numbered(
    event: bytes, data: bytes, offset: int, epoch: str, *, max_bytes: int, kind: str
) -> Outgoing:
    """A kept event whose data ends with its own offset and epoch."""
    if offset < 1:
        raise Invalid(kind, "offset 0: offsets start at 1")
    if not data.endswith(_position(offset, epoch)):
        raise Invalid(kind, "an event whose data does not carry its offset and epoch")
    message = _event(event, data, max_bytes, kind)
    message.offset = offset
    message.epoch = epoch
    return message


def _count(raw: bytes, kind: str) -> int:
    if not _COUNT.match(raw):
        raise Invalid(kind, f"not a count: {raw[:24]!r}")
    return int(raw)


def _epoch(raw: bytes, kind: str) -> str:
    if not _EPOCH.match(raw):
        raise Invalid(kind, f"not an epoch: {raw[:24]!r}")
    return raw.decode()


def encode_eviction(origin: str, target: str, count: int) -> bytes:
    return SEP.join((EVICT + origin.encode(), target.encode(), str(count).encode()))


def decode_eviction(rest: bytes) -> tuple[bytes, int]:
    """An eviction's target node and count, checked."""
    target, _, count = rest.partition(SEP)
    if not count.isdigit() or len(count) > 3:
        raise Invalid("eviction", f"not a count: {count[:16]!r}")
    return target, int(count)


# What waits for a player in Redis: b"<sender>\n<event>\n<data>" (no sender: the game's).


def encode_pending(sender: str | None, message: Outgoing) -> bytes:
    return (sender or "").encode() + SEP + message.event.encode() + SEP + message.data


def decode_pending(item: bytes, max_bytes: int) -> Outgoing:
    _, _, rest = item.partition(SEP)
    event, _, data = rest.partition(SEP)
    return _event(event, data, max_bytes, "pending")


# Presence: a hash of player id -> JSON [room, [connected_at, ...]].


def encode_presence(room: str, connected_at: tuple[float, ...]) -> bytes:
    return _encode(PresenceRecord(room, connected_at))


def decode_presence(player: bytes, raw: bytes) -> tuple[str, PresenceRecord]:
    return decode_name(player, "presence"), _decode(_decode_presence, raw, "presence")


def decode_name(raw: bytes, kind: str) -> str:
    """A player id (or room) read from a key or a field."""
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        raise Invalid(kind, "a name that is not UTF-8") from None
    if not _NAME.match(name):
        raise Invalid(kind, f"not a name: {name[:64]!r}")
    return name


def decode_node_id(raw: bytes) -> str:
    try:
        node = raw.decode()
    except UnicodeDecodeError:
        raise Invalid("node", "a node id that is not UTF-8") from None
    if not node or len(node) > MAX_NODE_ID or "\n" in node:
        raise Invalid("node", f"not a node id: {node[:64]!r}")
    return node


# Leases: a node's summary.


def encode_summary(summary: dict[str, Any]) -> bytes:
    return _encode(summary)


def decode_summary(raw: bytes | str) -> dict[str, Any]:
    summary: dict[str, Any] = msgspec.to_builtins(_decode(_decode_summary, raw, "summary"))
    return summary


def _decode(decode: Any, raw: bytes | str, kind: str) -> Any:
    try:
        return decode(raw)
    except (msgspec.DecodeError, RecursionError) as error:
        raise Invalid(kind, str(error)[:200]) from None
