"""Log lines: JSON with the facts as fields, readable on a terminal, never a token."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mudgate.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def test_json_lines_carry_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("mudgate.hub").info(
        "connection opened", extra={"player": "alice", "connection": "websocket-1"}
    )
    record = json.loads(stream.getvalue())
    assert record["event"] == "connection opened"
    assert (record["player"], record["connection"]) == ("alice", "websocket-1")
    assert (record["level"], record["logger"]) == ("info", "mudgate.hub")
    assert record["timestamp"].endswith("Z")


def test_tokens_never_reach_the_log() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("mudgate.access").info('"WebSocket /ws?token=%s&x=1" [accepted]', "abc.def")
    line = stream.getvalue()
    assert "abc.def" not in line
    assert "token=<redacted>&x=1" in line


@pytest.mark.parametrize("name", ["token", "TOKEN", "%74oken", "%74%6F%6B%65%6E", "Token"])
def test_a_token_is_redacted_however_its_name_is_spelled(name: str) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("mudgate.access").info('"GET /events?x=1&%s=abc.def HTTP/1.1" 401', name)
    line = stream.getvalue()
    assert "abc.def" not in line
    assert f"?x=1&{name}=<redacted>" in line


def test_a_traceback_is_text_in_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logging.getLogger("mudgate.server").exception("error in the app")
    record = json.loads(stream.getvalue())
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in record["exception"]
    assert "exc_info" not in record


def test_auto_is_readable_lines_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    configure_logging("info", "auto", terminal)
    logging.getLogger("mudgate").warning("shedding started", extra={"connections": 3})
    assert "shedding started" in terminal.getvalue()
    assert not terminal.getvalue().lstrip().startswith("{")
    pipe = io.StringIO()
    configure_logging("info", "auto", pipe)
    logging.getLogger("mudgate").warning("shedding started", extra={"connections": 3})
    assert json.loads(pipe.getvalue())["connections"] == 3


def test_the_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    logging.getLogger("mudgate").info("quiet")
    assert stream.getvalue() == ""


def test_uvicorns_coloured_copy_is_dropped() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("mudgate.access").info(
        "Finished server process [%d]", 7, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )
    record = json.loads(stream.getvalue())
    assert record["event"] == "Finished server process [7]"
    assert "color_message" not in record
