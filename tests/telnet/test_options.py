"""Option negotiation without loops (RFC 1143's spirit) and the MUD protocols' payloads."""

from __future__ import annotations

import pytest

from mudgate.server.telnet.options import (
    MAX_GMCP_PACKAGES,
    GmcpPackages,
    Mtts,
    Options,
    Side,
    charset_request,
    gmcp_message,
    mssp_payload,
    parse_charset_reply,
    parse_gmcp,
    parse_mtts,
    parse_naws,
)
from mudgate.server.telnet.parser import Opt, Verb


def options() -> Options:
    return Options(local=[Opt.GMCP, Opt.ECHO], remote=[Opt.NAWS])


def test_an_offer_is_acknowledged_without_an_answer() -> None:
    state = options()
    assert state.ask(Side.LOCAL, Opt.GMCP) == b"\xff\xfb\xc9"
    assert state.ask(Side.LOCAL, Opt.GMCP) == b""  # asked already
    change = state.receive(Verb.DO, Opt.GMCP)
    assert (change.reply, change.enabled) == (None, True)
    assert state.enabled(Side.LOCAL, Opt.GMCP)
    assert state.ask(Side.LOCAL, Opt.GMCP) == b""  # on already


def test_a_request_is_answered_once_and_repeats_are_not() -> None:
    state = options()
    assert state.receive(Verb.WILL, Opt.NAWS).reply == b"\xff\xfd\x1f"
    assert state.receive(Verb.WILL, Opt.NAWS).reply is None
    assert state.receive(Verb.WONT, Opt.NAWS).reply == b"\xff\xfe\x1f"
    assert state.receive(Verb.WONT, Opt.NAWS).reply is None
    assert not state.enabled(Side.REMOTE, Opt.NAWS)


def test_unsupported_options_are_refused_and_refusals_are_not_answered() -> None:
    state = options()
    assert state.receive(Verb.DO, 99).reply == b"\xff\xfc\x63"
    assert state.receive(Verb.WILL, 99).reply == b"\xff\xfe\x63"
    assert state.receive(Verb.DONT, 99).reply is None
    assert state.receive(Verb.WONT, 99).reply is None


def test_a_refused_offer_is_forgotten() -> None:
    state = options()
    state.ask(Side.LOCAL, Opt.GMCP)
    change = state.receive(Verb.DONT, Opt.GMCP)
    assert (change.reply, change.enabled) == (None, None)
    assert state.ask(Side.LOCAL, Opt.GMCP) == b"\xff\xfb\xc9"  # may be offered again


def test_turning_off_what_was_agreed() -> None:
    state = options()
    state.ask(Side.LOCAL, Opt.ECHO)
    state.receive(Verb.DO, Opt.ECHO)
    assert state.ask(Side.LOCAL, Opt.ECHO, on=False) == b"\xff\xfc\x01"
    assert state.receive(Verb.DONT, Opt.ECHO).reply is None  # the answer to our WONT
    assert not state.enabled(Side.LOCAL, Opt.ECHO)
    assert state.ask(Side.REMOTE, Opt.NAWS) == b"\xff\xfd\x1f"
    assert state.ask(Side.REMOTE, Opt.NAWS, on=False) == b""  # asked, not answered yet


def test_mtts() -> None:
    assert parse_mtts("MTTS 271") == Mtts.ANSI | Mtts.VT100 | Mtts.UTF8 | Mtts.COLORS_256 | 256
    assert parse_mtts("mtts 0") == Mtts(0)
    assert parse_mtts("XTERM") is None
    assert parse_mtts("MTTS 99999999") is None
    assert parse_mtts("MTTS -1") is None


def test_naws_charset_mssp() -> None:
    assert parse_naws(b"\x00\x50\x00\x18") == (80, 24)
    assert parse_naws(b"\x00\x50") is None
    assert charset_request() == b"\x01;UTF-8"
    assert parse_charset_reply(b"\x02UTF-8") is True
    assert parse_charset_reply(b"\x02latin1") is False
    assert parse_charset_reply(b"\x03") is False
    assert parse_charset_reply(b"\x01;UTF-8") is None
    assert parse_charset_reply(b"") is None
    # MSSP's markers (1, 2), NUL and IAC cannot appear inside a name or a value.
    assert mssp_payload({"NAME": "a\x01b\x02c", "PLAYERS": "3"}) == (
        b"\x01NAME\x02abc\x01PLAYERS\x023"
    )


def test_gmcp_messages() -> None:
    assert gmcp_message("Core.Ping", None) == b"Core.Ping"
    assert gmcp_message("Char.Vitals", {"hp": 1}) == b'Char.Vitals {"hp":1}'
    assert parse_gmcp(b'Core.Hello {"client": "x"}') == ("Core.Hello", {"client": "x"})
    assert parse_gmcp(b"Core.Ping") == ("Core.Ping", None)
    assert parse_gmcp(b"Core.Ping   ") == ("Core.Ping", None)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "1 to 64 characters"),
        (b"P" * 65, "1 to 64 characters"),
        (b"\xc3\xa9t\xc3\xa9 1", "ASCII"),
        (b"Core.Hello {nope", "not JSON"),
        (b"Core.Hello " + b"[" * 2000 + b"]" * 2000, "not JSON"),
    ],
)
def test_what_is_not_gmcp(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gmcp(payload)


def test_core_supports_keeps_the_packages_a_client_wants_within_a_cap() -> None:
    packages = GmcpPackages()
    packages.update("set", ["Room 1", "Mudgate 1", 7, "Comm.Channel 1"])
    assert ("room" in packages, "mudgate" in packages, len(packages)) == (True, True, 3)
    packages.update("remove", ["Mudgate"])
    packages.update("add", ["Char 1"])
    assert ("mudgate" in packages, "char" in packages) == (False, True)
    packages.update("set", [f"P{i} 1" for i in range(100)])  # replaced, and capped
    assert len(packages) == MAX_GMCP_PACKAGES
    assert "room" not in packages
