"""Telnet options: who has agreed to what, and the MUD protocols' own payloads.

``Options`` keeps the state of each option on both sides, in the spirit of RFC 1143's Q
method: a request is answered only when it changes the state, and an answer to a request of
ours is not answered again, so two parties can never loop. What the MUD protocols carry in
their subnegotiations is built and read by the functions after it: TTYPE and MTTS, NAWS,
CHARSET (RFC 2066), MSSP and GMCP.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .parser import Opt, Verb

__all__ = [
    "MAX_GMCP_PACKAGES",
    "GmcpPackages",
    "Mtts",
    "Options",
    "charset_request",
    "gmcp_message",
    "mssp_payload",
    "parse_charset_reply",
    "parse_gmcp",
    "parse_naws",
]


class Side(enum.Enum):
    LOCAL = "local"  # options the server does (WILL / WONT)
    REMOTE = "remote"  # options the client does (DO / DONT)


@dataclass(frozen=True, slots=True)
class Change:
    """What a negotiation did: ``reply`` to send (or None), and the option turned on or
    off on ``side`` (``enabled`` None: nothing changed)."""

    reply: bytes | None
    side: Side
    option: int
    enabled: bool | None


class Options:
    """The options each side has agreed to (see the module's docstring).

    ``local`` and ``remote`` name the options the server will do and will let the client do;
    anything else is refused. ``ask`` sends a request of ours (WILL for a local option, DO for
    a remote one); ``receive`` takes the client's negotiation and says what changed.
    """

    __slots__ = ("_asked", "_enabled", "_local", "_remote")

    def __init__(self, local: Iterable[int], remote: Iterable[int]) -> None:
        self._local = frozenset(local)
        self._remote = frozenset(remote)
        self._enabled: set[tuple[Side, int]] = set()
        self._asked: set[tuple[Side, int]] = set()

    def enabled(self, side: Side, option: int) -> bool:
        return (side, option) in self._enabled

    def ask(self, side: Side, option: int, on: bool = True) -> bytes:
        """Ask to turn ``option`` on (or off) on ``side``; b"" when it already is, or asked."""
        key = (side, option)
        if (key in self._enabled) == on or key in self._asked:
            return b""
        self._asked.add(key)
        if side is Side.LOCAL:
            verb = Verb.WILL if on else Verb.WONT
        else:
            verb = Verb.DO if on else Verb.DONT
        return bytes((255, verb, option))

    def receive(self, verb: Verb, option: int) -> Change:
        """The client's ``verb`` for ``option``: what to answer and what changed."""
        # DO/DONT are about what the server does; WILL/WONT about what the client does.
        side = Side.LOCAL if verb in (Verb.DO, Verb.DONT) else Side.REMOTE
        on = verb in (Verb.DO, Verb.WILL)
        key = (side, option)
        asked = key in self._asked
        self._asked.discard(key)
        supported = option in (self._local if side is Side.LOCAL else self._remote)
        if on and not supported:
            # Refused, once: a refusal of a request that was never agreed is not answered.
            refuse = Verb.WONT if side is Side.LOCAL else Verb.DONT
            return Change(bytes((255, refuse, option)), side, option, None)
        if on == (key in self._enabled):
            return Change(None, side, option, None)  # already so: not answered (no loop)
        if on:
            self._enabled.add(key)
            agree = Verb.WILL if side is Side.LOCAL else Verb.DO
        else:
            self._enabled.discard(key)
            agree = Verb.WONT if side is Side.LOCAL else Verb.DONT
        return Change(None if asked else bytes((255, agree, option)), side, option, on)


# TTYPE and MTTS (https://tintin.mudhalla.net/protocols/mtts/)

TTYPE_IS = 0
TTYPE_SEND = 1


class Mtts(enum.IntFlag):
    """MTTS capability bits, sent as the third terminal type ("MTTS 2825")."""

    ANSI = 1
    VT100 = 2
    UTF8 = 4
    COLORS_256 = 8
    MOUSE = 16
    OSC_COLOR = 32
    SCREEN_READER = 64
    PROXY = 128
    TRUECOLOR = 256
    MNES = 512
    MSLP = 1024
    SSL = 2048


def parse_mtts(name: str) -> Mtts | None:
    """The capability bits of a terminal type "MTTS n", None if it is not one."""
    word, _, number = name.partition(" ")
    if word.upper() != "MTTS" or not number.isdigit() or len(number) > 6:
        return None
    return Mtts(int(number) & 0xFFF)


# NAWS (RFC 1073)


def parse_naws(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from a NAWS subnegotiation, None if it is not four bytes."""
    if len(payload) != 4:
        return None
    return int.from_bytes(payload[:2], "big"), int.from_bytes(payload[2:], "big")


# CHARSET (RFC 2066)

CHARSET_REQUEST = 1
CHARSET_ACCEPTED = 2
CHARSET_REJECTED = 3


def charset_request() -> bytes:
    """The payload asking the client to agree on UTF-8."""
    return bytes((CHARSET_REQUEST,)) + b";UTF-8"


def parse_charset_reply(payload: bytes) -> bool | None:
    """True if the client accepted UTF-8, False if it rejected it, None if it is no reply."""
    if not payload:
        return None
    if payload[0] == CHARSET_ACCEPTED:
        return payload[1:].strip().upper() in (b"UTF-8", b"UTF8")
    if payload[0] == CHARSET_REJECTED:
        return False
    return None


# MSSP (https://tintin.mudhalla.net/protocols/mssp/)

MSSP_VAR = 1
MSSP_VAL = 2


def mssp_payload(variables: Mapping[str, str]) -> bytes:
    """MSSP's variables, each name and value as MSSP_VAR name MSSP_VAL value."""
    out = bytearray()
    for name, value in variables.items():
        out += bytes((MSSP_VAR,)) + _mssp_text(name) + bytes((MSSP_VAL,)) + _mssp_text(value)
    return bytes(out)


def _mssp_text(text: str) -> bytes:
    # MSSP_VAR, MSSP_VAL, NUL and IAC may not appear inside a name or value.
    return bytes(b for b in text.encode() if b > 2)


# GMCP (https://tintin.mudhalla.net/protocols/gmcp/)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def gmcp_message(package: str, data: object) -> bytes:
    """A GMCP payload: the package name, then its data as JSON (none for None)."""
    if data is None:
        return package.encode()
    return package.encode() + b" " + _encoder.encode(data)


def parse_gmcp(payload: bytes) -> tuple[str, object]:
    """(package, data) of a GMCP payload; raises ValueError if it is not GMCP."""
    package, _, data = payload.partition(b" ")
    try:
        name = package.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("a GMCP package name is ASCII") from None
    if not name or len(name) > 64:
        raise ValueError("a GMCP package name has 1 to 64 characters")
    if not data.strip():
        return name, None
    try:
        return name, _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        raise ValueError(f"the data of GMCP {name} is not JSON") from None


# GMCP packages a client may say it supports (Core.Supports.Set), kept per connection.
MAX_GMCP_PACKAGES = 32


class GmcpPackages:
    """The GMCP packages a client said it wants, lower-cased without their version ("Room 1"
    is ``room``): what ``Core.Supports.Set`` (``.Add``, ``.Remove``) told, at most
    MAX_GMCP_PACKAGES of them, each name cut at 32 characters. Telnet and the WebSocket's
    ``gmcp.mudstandards.org`` keep one per connection."""

    __slots__ = ("_packages",)

    def __init__(self) -> None:
        self._packages: set[str] = set()

    def __contains__(self, package: str) -> bool:
        return package in self._packages

    def __len__(self) -> int:
        return len(self._packages)

    def update(self, verb: str, entries: list[Any]) -> None:
        """Apply ``Core.Supports.<verb>`` (``set``, ``add`` or ``remove``, lower-case) with
        its list; entries that are not strings are skipped."""
        packages = self._packages
        if verb == "set":
            packages.clear()
        for entry in entries[:MAX_GMCP_PACKAGES]:
            if not isinstance(entry, str):
                continue
            package = entry.partition(" ")[0].lower()[:32]
            if verb == "remove":
                packages.discard(package)
            elif len(packages) < MAX_GMCP_PACKAGES:
                packages.add(package)


LOCAL_OPTIONS = (Opt.GMCP, Opt.MCCP2, Opt.EOR, Opt.MSSP, Opt.ECHO, Opt.CHARSET, Opt.SGA)
REMOTE_OPTIONS = (Opt.TTYPE, Opt.NAWS, Opt.CHARSET)
