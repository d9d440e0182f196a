"""Frames in, events out."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from mudgate.protocol import (
    MAX_RESUME_BYTES,
    RESUMED_EVENT_BYTES,
    CloseCode,
    CommandError,
    ErrorCode,
    Outgoing,
    Position,
    encode_error,
    encode_event,
    parse_frame,
    parse_resume,
    restart_reason,
    websocket_binary_frame,
    websocket_messages,
    websocket_text_frame,
)


def test_a_frame_splits_into_envelope_and_fields() -> None:
    frame, fields = parse_frame('{"op": "say", "text": "hi", "id": 3}')
    assert (frame.op, frame.id) == ("say", 3)
    assert fields["text"] == "hi"


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("{", ErrorCode.BAD_JSON, None),
        ("null", ErrorCode.BAD_FRAME, None),
        ('{"op": ""}', ErrorCode.BAD_FRAME, None),
        ('{"op": "x", "id": true}', ErrorCode.BAD_FRAME, None),
        ('{"id": "a"}', ErrorCode.BAD_FRAME, "a"),
        ('{"op": "x", "id": "' + "i" * 65 + '"}', ErrorCode.BAD_FRAME, "i" * 65),
    ],
)
def test_malformed_frames_raise_a_protocol_error(
    raw: str, code: ErrorCode, request_id: object
) -> None:
    with pytest.raises(CommandError) as error:
        parse_frame(raw)
    assert error.value.code is code
    assert error.value.request_id == request_id


def test_an_event_is_encoded_once_for_every_transport() -> None:
    message = Outgoing("say", b'{"a":1}')
    assert message.text == '{"a":1}'
    assert message.sse == b'event: say\ndata: {"a":1}\n\n'
    assert message.sse is message.sse
    assert len(message) == 7
    assert "say" in repr(message)


def test_errors_and_close_records() -> None:
    assert json.loads(encode_error(ErrorCode.BAD_JSON, "nope", 4).data) == {
        "type": "error",
        "code": "bad_json",
        "message": "nope",
        "id": 4,
    }
    record = Outgoing.close_record(CloseCode.SLOW_CONSUMER, "outbox full")
    assert (
        record.sse == b'event: close\ndata: {"type":"close","code":4008,"reason":"outbox full"}\n\n'
    )
    assert Outgoing.sse_comment("keep-alive").sse == b": keep-alive\n\n"


def test_close_codes_have_readable_reasons() -> None:
    assert CloseCode.SLOW_CONSUMER.reason == "slow consumer"
    assert CloseCode.TRY_AGAIN_LATER == 1013


@pytest.mark.parametrize(
    ("window", "said"), [(5.0, "5"), (2.5, "2.5"), (0.0, "0"), (0.001, "0.001"), (300.0, "300")]
)
def test_a_restart_reason_names_the_reconnect_window(window: float, said: str) -> None:
    reason = restart_reason(window)
    assert reason == f"server restarting; reconnect within {said} s"
    # What clients look for (docs/protocol.md), within a close frame's 123 bytes.
    found = re.search(r"reconnect within ([0-9.]+) s", reason)
    assert found is not None
    assert float(found.group(1)) == window
    assert len(reason.encode()) <= 123


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_an_outgoing_frame_is_what_websockets_reads_as_its_text(size: int) -> None:
    data = json.dumps({"type": "event", "text": "é" * (size // 2)}).encode()[:size]
    message = Outgoing("say", data)
    reader = StreamReader()
    reader.feed_data(message.frame)
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    frame = parsed.value.value
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, data)
    assert not reader.buffer  # the frame is exactly its header and payload
    assert message.frame is message.frame  # built once, shared by every recipient


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_a_binary_frame_is_what_websockets_reads_as_its_bytes(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reader = StreamReader()
    reader.feed_data(websocket_binary_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    frame = parsed.value.value
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
    assert not reader.buffer


def test_prebuilt_frames_split_back_into_their_messages() -> None:
    messages = [(False, b"x" * 70000), (True, b"Room.Info {}"), (False, b""), (True, b"y" * 200)]
    frames = b"".join(
        websocket_text_frame(payload) if text else websocket_binary_frame(payload)
        for text, payload in messages
    )
    assert list(websocket_messages(frames)) == messages
    assert list(websocket_messages(b"")) == []


def test_views_are_built_once_and_dropped_after_a_broadcast() -> None:
    message = encode_event("say", {"text": "hi"})
    built: list[int] = []

    def build(m: object) -> bytes:
        built.append(1)
        return b"view"

    assert message.view("telnet", build) == b"view"
    assert message.view("telnet", build) == b"view"
    assert len(built) == 1
    message.drop_views()
    assert message.view("telnet", build) == b"view"
    assert len(built) == 2


# Resume strings


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)
positions = st.builds(
    Position,
    st.builds("{}:{}".format, st.sampled_from(["room", "channel"]), names),
    st.integers(0, 10**18 - 1),
    st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True)),
)


@given(st.lists(positions, max_size=20))
def test_positions_round_trip_through_a_resume_string(written: list[Position]) -> None:
    text = ",".join(str(position) for position in written)
    if len(text) <= MAX_RESUME_BYTES:
        assert parse_resume(text, max_entries=20) == written
    else:
        with pytest.raises(ValueError, match="longer than"):
            parse_resume(text, max_entries=20)


def test_the_resume_string_of_the_docs_parses() -> None:
    assert parse_resume("room:hall:41:9f86d081,channel:ooc:7:0c1d2e3f", 2) == [
        Position("room:hall", 41, "9f86d081"),
        Position("channel:ooc", 7, "0c1d2e3f"),
    ]
    assert parse_resume("room:lobby:0:", 1) == [Position("room:lobby", 0, "")]  # nothing yet


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (",", "empty entry"),
        ("room:hall:1:ab,", "empty entry"),
        (",room:hall:1:ab", "empty entry"),
        ("room:hall:1:ab,,channel:ooc:1:ab", "empty entry"),
        ("room:hall", "is not TOPIC:OFFSET:EPOCH"),
        ("room:hall:1", "is not TOPIC:OFFSET:EPOCH"),
        (":hall:1:ab", "is not TOPIC:OFFSET:EPOCH"),
        ("room::1:ab", "is not TOPIC:OFFSET:EPOCH"),
        ("room:ha:ll:1:ab", "is not TOPIC:OFFSET:EPOCH"),  # a colon inside a name
        ("room:hall:1:ab:cd", "is not TOPIC:OFFSET:EPOCH"),
        ("room:" + "x" * 33 + ":1:ab", "is not TOPIC:OFFSET:EPOCH"),
        ("room:-hall:1:ab", "is not TOPIC:OFFSET:EPOCH"),
        ("room:hall:-1:ab", "offset"),
        ("room:hall::ab", "offset"),
        ("room:hall:1e3:ab", "offset"),
        ("room:hall:\u0661:ab", "offset"),  # an Arabic-Indic one: a digit, not ASCII
        ("room:hall:" + "9" * 19 + ":ab", "offset"),  # past 18 digits
        ("room:hall:1:XYZ", "epoch"),
        ("room:hall:1:AB", "epoch"),  # hex, but as the server never writes it
        ("room:hall:1:" + "a" * 17, "epoch"),
        ("room:hall:1:ab ", "epoch"),
        (",".join(f"channel:c{n}:1:ab" for n in range(4)), "more than 3 entries"),
        ("room:hall:1:ab," + "c" * MAX_RESUME_BYTES, "longer than 2048 bytes"),
        ("\u00e9" * 1500, "longer than 2048 bytes"),  # 1,500 characters, 3,000 bytes
    ],
)
def test_a_malformed_resume_string_raises_saying_why(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        parse_resume(text, max_entries=3)


def test_a_huge_offset_is_called_too_large() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_resume("room:hall:" + "9" * 19 + ":ab", max_entries=1)


def test_the_longest_resumed_event_fits_its_reserved_bytes() -> None:
    longest = encode_event(
        "resumed",
        {
            "channel": "c" * 32,
            "recovered": False,
            "offset": 10**19 - 1,
            "epoch": "f" * 16,
            "missed": 10**9,
            "reason": "epoch_changed",
            "ts": 9_999_999_999.999,
            "seq": 10**19 - 1,
        },
    )
    assert len(longest) <= RESUMED_EVENT_BYTES
