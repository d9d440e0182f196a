"""The command registry: built-ins and a game's own verbs go through the same door."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from mudgate.command_stats import UNKNOWN, CommandStats
from mudgate.commands import CommandContext, NoArgs, builtin_commands
from mudgate.hub import Hub
from mudgate.protocol import CommandError, ErrorCode

from .conftest import FakeClock, connect, settle


class Roll(msgspec.Struct):
    sides: int = 6


async def test_a_game_registers_its_own_command(hub: Hub) -> None:
    commands = builtin_commands()

    @commands.register("roll", Roll)
    async def roll(ctx: CommandContext, args: Roll) -> None:
        ctx.reply("rolled", value=args.sides)

    assert "roll" in commands
    assert "roll" in commands.ops
    conn = connect(hub, "alice")
    assert await commands.dispatch(hub, conn, '{"op": "roll", "sides": 20, "id": 1}') is None
    await settle()
    reply = json.loads(conn.written[-1].data)
    assert (reply["event"], reply["value"], reply["id"]) == ("rolled", 20, 1)


async def test_an_op_cannot_be_registered_twice() -> None:
    commands = builtin_commands()
    with pytest.raises(ValueError, match="already registered"):
        commands.register("say")(lambda ctx, args: None)


async def test_a_failing_handler_answers_internal_and_logs(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    commands = builtin_commands()

    @commands.register("explode")
    def explode(ctx: CommandContext, args: NoArgs) -> None:
        raise RuntimeError("boom")

    conn = connect(hub, "alice")
    with caplog.at_level(logging.ERROR):
        error = await commands.dispatch(hub, conn, '{"op": "explode", "id": 2}')
    assert isinstance(error, CommandError)
    assert (error.code, error.request_id) == (ErrorCode.INTERNAL, 2)
    assert "boom" in caplog.text


async def test_a_handler_can_refuse_with_a_protocol_error(hub: Hub) -> None:
    commands = builtin_commands()

    @commands.register("nope")
    def nope(ctx: CommandContext, args: NoArgs) -> None:
        raise CommandError(ErrorCode.INVALID_ARGS, "not now")

    error = await commands.dispatch(hub, connect(hub, "alice"), '{"op": "nope", "id": "x"}')
    assert error is not None
    assert (error.message, error.request_id) == ("not now", "x")


async def test_a_command_from_a_closing_connection_is_refused(hub: Hub) -> None:
    conn = connect(hub, "alice")
    hub.disconnect(conn)
    error = await builtin_commands().dispatch(hub, conn, '{"op": "look"}')
    assert error is not None
    assert error.code is ErrorCode.NOT_CONNECTED


async def test_telling_yourself_does_not_echo_told(hub: Hub) -> None:
    conn = connect(hub, "alice")
    await builtin_commands().dispatch(hub, conn, '{"op": "tell", "to": "alice", "text": "hm"}')
    await settle()
    assert conn.events()[-1] == "tell"


def test_a_game_unregisters_a_builtin_and_help_describes_what_is_left() -> None:
    class Emote(msgspec.Struct):
        text: str
        times: int = 1

    registry = builtin_commands()
    registry.unregister("go")
    registry.register("emote", Emote)(lambda ctx, args: None)
    with pytest.raises(ValueError, match="not registered"):
        registry.unregister("go")
    schema = {command["op"]: command["fields"] for command in registry.schema()}
    assert "go" not in schema
    assert schema["emote"] == [
        {"name": "text", "required": True, "type": "text"},
        {"name": "times", "required": False, "type": "integer"},
    ]
    assert schema["tell"] == [
        {"name": "to", "required": True, "type": "text"},
        {"name": "text", "required": True, "type": "text"},
    ]
    assert schema["look"] == []


async def test_dispatch_counts_and_times_each_command_under_its_op(
    hub: Hub, clock: FakeClock
) -> None:
    commands = builtin_commands()
    stats = commands.stats = CommandStats(commands, clock=clock)

    @commands.register("ponder")
    def ponder(ctx: CommandContext, args: NoArgs) -> None:
        clock.advance(0.3)  # as long as the handler ran

    conn = connect(hub, "alice")
    for frame in ('{"op": "ponder"}', '{"op": "ping"}', '{"op": "say"}', '{"op": "bogus"}'):
        await commands.dispatch(hub, conn, frame)
    assert await commands.dispatch(hub, conn, "not json") is not None
    ops = {op.op: op for op in stats.snapshot()}
    assert {name: (op.count, dict(op.errors)) for name, op in ops.items()} == {
        "ponder": (1, {}),
        "ping": (1, {}),
        "say": (1, {"invalid_args": 1}),
        # An op nobody registered, and a frame without one, under a single label.
        UNKNOWN: (2, {"unknown_op": 1, "bad_json": 1}),
    }
    assert ops["ponder"].sum_seconds == pytest.approx(0.3)
    assert ops["ponder"].quantile(0.5) > 0.25
    assert ops["ping"].sum_seconds == 0.0
