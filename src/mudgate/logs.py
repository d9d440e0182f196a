"""How mudgate logs: one JSON object per line, or readable lines on a terminal.

Modules log through the standard library with the facts as ``extra`` fields
(``logger.info("connection opened", extra={"player": ..., "connection": ...})``); the formatter
installed here turns every record, uvicorn's included, into a structured line. Player tokens
are redacted wherever they appear.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal, TextIO
from urllib.parse import unquote

import structlog
from structlog.typing import EventDict

__all__ = ["configure_logging", "drop_color_message", "redact_tokens"]

# A query parameter: its name (percent-encoded or not) and its value.
_PARAMETER = re.compile(r"(?<=[?&;])([^=&;\s\"'?]+)=([^&;\s\"']*)")


def drop_color_message(logger: Any, method: str, event: EventDict) -> EventDict:
    """uvicorn adds a copy of its message with terminal colours; the renderer colours anyway."""
    event.pop("color_message", None)
    return event


def _redact(match: re.Match[str]) -> str:
    name = match[1]
    # `%74oken`, `TOKEN`: whatever the spelling, a server that decodes it sees `token`.
    if unquote(name).lower() == "token":
        return f"{name}=<redacted>"
    return match[0]


def redact_tokens(logger: Any, method: str, event: EventDict) -> EventDict:
    """A structlog processor: ``?token=...`` becomes ``?token=<redacted>`` in every string,
    however the parameter's name is spelled or encoded."""
    for key, value in event.items():
        if isinstance(value, str) and "=" in value:
            event[key] = _PARAMETER.sub(_redact, value)
    return event


def configure_logging(
    level: str = "info",
    log_format: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Send every log record to ``stream`` (stderr) as JSON or as readable lines."""
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_color_message,
        redact_tokens,
    ]
    # JSON: a traceback becomes the "exception" field, as text (not the repr of a tuple).
    renderers: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
