"""A fuzzer of WebSocket frames, every op and every field: whatever a client sends, each frame
with an ``id`` gets exactly one answer, the connection is never dropped without a close code,
and nothing the server answers is a failure of its own (``internal``)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mudgate.commands import builtin_commands

from ..conftest import make_settings
from .server import RunningServer

OPS = builtin_commands().ops
FIELDS = ("text", "room", "channel", "to")

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    scalars | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    names,
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=3990, max_size=4010),
    json_values,
    st.just("lobby\n"),
    st.just("[" * 500),
)
frames = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(OPS), st.text(max_size=70), json_values)},
    optional=dict.fromkeys(FIELDS, field_values),
)
raw = st.one_of(
    st.text(max_size=200),  # not JSON, or not an object
    st.just("[" * 2000),
    st.builds(lambda depth: '{"op": "say", "text": ' + "[" * depth, st.integers(1, 3000)),
)
entries = st.lists(st.one_of(frames, raw), min_size=1, max_size=12)

# Close codes a client may be given: too many bad frames, a frame too big, too fast.
DOCUMENTED_CLOSES = {1008, 1009, 4029}
_players = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(
        make_settings(
            ping_interval=30,
            ping_timeout=30,
            bad_frame_limit=10_000,
            player_messages_per_second=100_000,
            player_message_burst=100_000,
        )
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def exchange(server: RunningServer, entries: list[Any]) -> None:
    player = f"fuzz{next(_players)}"
    expected: set[int] = set()
    async with connect(server.ws(player), max_size=None) as ws:
        answers: dict[int, int] = {}
        welcome = json.loads(await ws.recv())
        assert welcome["event"] == "welcome"
        for number, entry in enumerate(entries):
            if isinstance(entry, dict):
                expected.add(number)
                await ws.send(json.dumps({**entry, "id": number}))
            else:
                await ws.send(entry)
        await ws.send(json.dumps({"op": "ping", "id": "end"}))
        try:
            async with asyncio.timeout(10):
                async for message in ws:
                    answer = json.loads(message)
                    assert answer.get("code") != "internal", answer
                    if answer.get("id") == "end":
                        break
                    if isinstance(answer.get("id"), int):
                        answers[answer["id"]] = answers.get(answer["id"], 0) + 1
        except ConnectionClosed:
            assert ws.close_code in DOCUMENTED_CLOSES, (ws.close_code, ws.close_reason)
            return
        assert answers == dict.fromkeys(expected, 1)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=entries)
def test_every_frame_gets_one_answer_and_no_failure(
    server: RunningServer, entries: list[Any]
) -> None:
    asyncio.run(exchange(server, entries))
