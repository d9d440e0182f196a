"""The telnet stream (RFC 854/855) without I/O: bytes in, events out, in the manner of
``websockets.protocol``.

``receive_data`` takes what the socket read; ``next_event`` parses on demand and returns one
event at a time: a ``Line`` the player typed, a ``Negotiation`` (IAC WILL/WONT/DO/DONT), a
``Subnegotiation`` (IAC SB ... IAC SE) or a ``Command`` (IAC NOP, IAC AYT...). A sequence may
be split anywhere between two reads, even inside ``IAC SB`` or between CR and LF, as TCP is
free to split it. Nothing grows past its bound: a line longer than ``max_line_bytes`` or a
subnegotiation longer than ``max_subnegotiation_bytes`` raises ``TelnetError`` at the byte
that crosses it, and what was received but not yet asked for stays one buffer, since the
caller stops reading until it asks again (the server pauses its socket while a line is being
handled).

The functions at the end build what the server sends: negotiations, subnegotiations (IAC
escaped) and text (UTF-8, CR LF line ends).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "IAC",
    "Command",
    "Event",
    "Line",
    "Negotiation",
    "Opt",
    "Subnegotiation",
    "TelnetError",
    "TelnetParser",
    "Verb",
    "command",
    "negotiate",
    "subnegotiation",
    "text_bytes",
]

IAC = 255
SB = 250
SE = 240
CR = 13
LF = 10
NUL = 0


class Verb(enum.IntEnum):
    """Option negotiation (RFC 855)."""

    WILL = 251
    WONT = 252
    DO = 253
    DONT = 254


class Cmd(enum.IntEnum):
    """The commands after IAC that are neither negotiation nor subnegotiation."""

    EOR = 239  # end of record (RFC 885): marks a prompt, once TELOPT_EOR is agreed
    NOP = 241
    DM = 242
    BRK = 243
    IP = 244
    AO = 245
    AYT = 246
    EC = 247
    EL = 248
    GA = 249  # go ahead: marks a prompt otherwise


class Opt(enum.IntEnum):
    """The options mudgate speaks (and MUD clients ask for)."""

    ECHO = 1
    SGA = 3
    TTYPE = 24
    EOR = 25
    NAWS = 31
    CHARSET = 42
    MSSP = 70
    MCCP2 = 86
    GMCP = 201


@dataclass(frozen=True, slots=True)
class Line:
    """One line the client typed, without its end (CR LF, CR NUL, CR or LF), as bytes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Negotiation:
    verb: Verb
    option: int


@dataclass(frozen=True, slots=True)
class Subnegotiation:
    option: int
    payload: bytes  # IAC IAC already undone


@dataclass(frozen=True, slots=True)
class Command:
    command: int


Event = Line | Negotiation | Subnegotiation | Command


class TelnetError(Exception):
    """The client crossed a bound; ``kind`` names it for the counters, the message says
    what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _State(enum.Enum):
    DATA = 0
    CR = 1  # a CR ended a line: a LF or NUL right after it belongs to it
    IAC = 2
    VERB = 3  # after IAC WILL/WONT/DO/DONT: the option comes next
    SB = 4  # after IAC SB: the option comes next
    SB_DATA = 5
    SB_IAC = 6


# The bytes that end a run of plain text.
_SPECIAL = (IAC, CR, LF)


class TelnetParser:
    """Parse what a telnet client sends, one event at a time (see the module's docstring)."""

    __slots__ = (
        "_buffer",
        "_line",
        "_max_sub",
        "_option",
        "_position",
        "_state",
        "_sub",
        "_verb",
        "max_line_bytes",
    )

    def __init__(self, *, max_line_bytes: int, max_subnegotiation_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._max_sub = max_subnegotiation_bytes
        self._buffer = b""  # received, not parsed yet
        self._position = 0
        self._line = bytearray()  # the line being typed
        self._sub = bytearray()  # the subnegotiation being received
        self._state = _State.DATA
        self._verb = Verb.WILL
        self._option = 0

    @property
    def buffered_bytes(self) -> int:
        """What the parser holds: unparsed input, the line and the subnegotiation so far."""
        return len(self._buffer) - self._position + len(self._line) + len(self._sub)

    def receive_data(self, data: bytes) -> None:
        if self._position >= len(self._buffer):
            self._buffer, self._position = data, 0
        else:
            self._buffer = self._buffer[self._position :] + data
            self._position = 0

    def next_event(self) -> Event | None:
        """The next whole event in what was received, or None until more arrives. Raises
        TelnetError when a bound is crossed (the connection should then be closed)."""
        buffer = self._buffer
        end = len(buffer)
        i = self._position
        event: Event | None = None
        while i < end and event is None:
            i, event = _STEPS[self._state](self, buffer, i, end)
        self._position = i
        if i >= end:
            self._buffer, self._position = b"", 0
        return event

    # One step of each state: from position ``i``, where the next step starts and the event
    # this one completed, if any.

    def _data(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        if self._state is _State.CR:
            self._state = _State.DATA
            if buffer[i] in (LF, NUL):  # the rest of the CR LF (or CR NUL) that ended a line
                return i + 1, None
        # The run of plain text up to the next special byte, copied at once.
        stop = _find_special(buffer, i, end)
        if stop > i:
            self._take_text(buffer, i, stop)
            return stop, None
        byte = buffer[i]
        if byte == IAC:
            self._state = _State.IAC
            return i + 1, None
        self._state = _State.CR if byte == CR else _State.DATA  # CR or LF ends the line
        line = Line(bytes(self._line))
        self._line.clear()
        return i + 1, line

    def _iac(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        byte = buffer[i]
        self._state = _State.DATA
        if byte == IAC:
            self._take_text(b"\xff", 0, 1)
        elif byte in _VERBS:
            self._verb = Verb(byte)
            self._state = _State.VERB
        elif byte == SB:
            self._state = _State.SB
        else:
            return i + 1, Command(byte)
        return i + 1, None

    def _negotiation(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        self._state = _State.DATA
        return i + 1, Negotiation(self._verb, buffer[i])

    def _sb(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        self._option = buffer[i]
        self._sub.clear()
        self._state = _State.SB_DATA
        return i + 1, None

    def _sb_data(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        stop = buffer.find(b"\xff", i, end)
        stop = end if stop < 0 else stop
        if stop > i:
            self._take_sub(buffer, i, stop)
            return stop, None
        self._state = _State.SB_IAC
        return i + 1, None

    def _sb_iac(self, buffer: bytes, i: int, end: int) -> tuple[int, Event | None]:
        byte = buffer[i]
        if byte == IAC:
            self._take_sub(b"\xff", 0, 1)
            self._state = _State.SB_DATA
            return i + 1, None
        if byte == SE:
            event = Subnegotiation(self._option, bytes(self._sub))
            self._sub.clear()
            self._state = _State.DATA
            return i + 1, event
        # IAC then anything but IAC or SE inside a subnegotiation is not telnet: the
        # subnegotiation is dropped and the byte read as the command after an IAC.
        self._sub.clear()
        self._state = _State.IAC
        return i, None

    def _take_text(self, data: bytes, start: int, stop: int) -> None:
        if len(self._line) + stop - start > self.max_line_bytes:
            raise TelnetError(
                "line_too_long", f"a line may be at most {self.max_line_bytes} bytes long"
            )
        self._line += data[start:stop]

    def _take_sub(self, data: bytes, start: int, stop: int) -> None:
        if len(self._sub) + stop - start > self._max_sub:
            raise TelnetError(
                "subnegotiation_too_long",
                f"a telnet subnegotiation may be at most {self._max_sub} bytes long",
            )
        self._sub += data[start:stop]


_VERBS = frozenset(int(verb) for verb in Verb)

_Step = Callable[[TelnetParser, bytes, int, int], tuple[int, Event | None]]
_STEPS: dict[_State, _Step] = {
    _State.DATA: TelnetParser._data,
    _State.CR: TelnetParser._data,
    _State.IAC: TelnetParser._iac,
    _State.VERB: TelnetParser._negotiation,
    _State.SB: TelnetParser._sb,
    _State.SB_DATA: TelnetParser._sb_data,
    _State.SB_IAC: TelnetParser._sb_iac,
}


def _find_special(buffer: bytes, start: int, end: int) -> int:
    """Where the next IAC, CR or LF is at or after ``start`` (``end`` if none)."""
    stop = end
    for special in _SPECIAL:
        found = buffer.find(special, start, stop)
        if found >= 0:
            stop = found
    return stop


# What the server sends


def negotiate(verb: Verb, option: int) -> bytes:
    return bytes((IAC, verb, option))


def subnegotiation(option: int, payload: bytes) -> bytes:
    """IAC SB option payload IAC SE, with every IAC in the payload doubled."""
    return bytes((IAC, SB, option)) + payload.replace(b"\xff", b"\xff\xff") + bytes((IAC, SE))


def command(code: int) -> bytes:
    return bytes((IAC, code))


def text_bytes(text: str) -> bytes:
    """Text as a telnet client reads it: UTF-8 (which never holds the byte IAC), lines ended
    with CR LF."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
