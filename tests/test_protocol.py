"""Frames in, events out."""

from __future__ import annotations

import json
import re

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from mudgate.protocol import (
    CloseCode,
    CommandError,
    ErrorCode,
    Outgoing,
    encode_error,
    encode_event,
    parse_frame,
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
