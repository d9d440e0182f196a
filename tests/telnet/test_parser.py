"""The sans-I/O telnet parser, as websockets' protocol is tested: bytes in, events out, split
anywhere, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mudgate.server.telnet.parser import (
    Command,
    Event,
    Line,
    Negotiation,
    Opt,
    Subnegotiation,
    TelnetError,
    TelnetParser,
    Verb,
    command,
    negotiate,
    subnegotiation,
    text_bytes,
)

IAC = b"\xff"


def parse(*chunks: bytes, max_line: int = 1024, max_sub: int = 256) -> list[Event]:
    parser = TelnetParser(max_line_bytes=max_line, max_subnegotiation_bytes=max_sub)
    events: list[Event] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not None:
            events.append(event)
    return events


def test_lines_end_with_crlf_crnul_cr_or_lf() -> None:
    assert parse(b"one\r\ntwo\r\x00three\rfour\nfive") == [
        Line(b"one"),
        Line(b"two"),
        Line(b"three"),
        Line(b"four"),
    ]
    assert parse(b"\r\n\n") == [Line(b""), Line(b"")]


def test_negotiation_subnegotiation_and_commands() -> None:
    stream = (
        b"a"
        + negotiate(Verb.DO, Opt.GMCP)
        + b"b"
        + subnegotiation(Opt.GMCP, b'Core.Hello {"x": "\xff"}')
        + command(241)
        + IAC
        + IAC
        + b"c\r\n"
    )
    assert parse(stream) == [
        Negotiation(Verb.DO, Opt.GMCP),
        Subnegotiation(Opt.GMCP, b'Core.Hello {"x": "\xff"}'),
        Command(241),
        Line(b"ab\xffc"),
    ]


def test_a_broken_subnegotiation_is_dropped_and_its_command_read() -> None:
    # IAC then neither IAC nor SE inside SB: not telnet; the command after it still counts.
    assert parse(b"\xff\xfa\xc9Core\xff\xfb\x18x\n") == [Negotiation(Verb.WILL, 24), Line(b"x")]


def test_events_come_one_at_a_time_and_what_waits_is_one_buffer() -> None:
    parser = TelnetParser(max_line_bytes=100, max_subnegotiation_bytes=100)
    parser.receive_data(b"a\nb\nc")
    assert parser.next_event() == Line(b"a")
    assert parser.buffered_bytes == 3  # "b\nc", not parsed until asked
    parser.receive_data(b"\n")
    assert parser.next_event() == Line(b"b")
    assert parser.next_event() == Line(b"c")
    assert parser.next_event() is None
    assert parser.buffered_bytes == 0


@pytest.mark.parametrize(
    ("stream", "kind"),
    [
        (b"x" * 11, "line_too_long"),
        (b"x" * 5 + IAC + IAC + b"x" * 5, "line_too_long"),
        (b"\xff\xfa\xc9" + b"y" * 9, "subnegotiation_too_long"),
        (b"\xff\xfa\xc9" + b"\xff\xff" * 9, "subnegotiation_too_long"),
    ],
)
def test_a_bound_crossed_raises_at_the_byte_that_crosses_it(stream: bytes, kind: str) -> None:
    with pytest.raises(TelnetError) as raised:
        parse(stream, max_line=10, max_sub=8)
    assert raised.value.kind == kind
    assert "at most" in str(raised.value)


def test_within_the_bounds_nothing_is_raised() -> None:
    assert parse(b"x" * 10 + b"\n", max_line=10) == [Line(b"x" * 10)]
    assert parse(subnegotiation(Opt.GMCP, b"y" * 8), max_sub=8) == [
        Subnegotiation(Opt.GMCP, b"y" * 8)
    ]


def test_the_line_bound_can_change_between_login_and_play() -> None:
    parser = TelnetParser(max_line_bytes=4, max_subnegotiation_bytes=4)
    parser.max_line_bytes = 8
    parser.receive_data(b"12345678\n")
    assert parser.next_event() == Line(b"12345678")


PIECES = st.lists(
    st.one_of(
        st.binary(max_size=20).map(lambda b: b.replace(b"\xff", b"\xff\xff")),
        st.sampled_from([b"\r\n", b"\r\x00", b"\n", b"\r"]),
        st.builds(negotiate, st.sampled_from(list(Verb)), st.integers(0, 255)),
        st.builds(subnegotiation, st.integers(0, 255), st.binary(max_size=30)),
        st.builds(command, st.sampled_from([241, 246, 249, 239, 244])),
    ),
    max_size=30,
)


@given(PIECES, st.lists(st.integers(0, 400), max_size=10))
def test_a_stream_split_anywhere_parses_the_same(pieces: list[bytes], cuts: list[int]) -> None:
    """TCP may split a stream between any two bytes: IAC from its verb, CR from its LF."""
    stream = b"".join(pieces)
    whole = parse(stream)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse(*chunks) == whole
    assert parse(*[bytes([b]) for b in stream]) == whole


def test_what_the_server_sends() -> None:
    assert negotiate(Verb.WILL, Opt.MCCP2) == b"\xff\xfb\x56"
    assert subnegotiation(Opt.GMCP, b"a\xffb") == b"\xff\xfa\xc9a\xff\xffb\xff\xf0"
    assert command(249) == b"\xff\xf9"
    assert text_bytes("one\ntwo\r\nthree ü") == "one\r\ntwo\r\nthree ü".encode()
