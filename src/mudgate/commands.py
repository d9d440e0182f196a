"""The command registry and the built-in room-chat commands.

Every op a client may send is a command registered here, the built-ins exactly as a game
registers its own verbs::

    @commands.register("roll", Roll)
    def roll(ctx: CommandContext, args: Roll) -> None:
        ctx.reply("rolled", value=random.randint(1, args.sides))

An op nobody registered is simply unknown.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import msgspec.inspect
import msgspec.structs

from .backplane.topic import channel_topic
from .command_stats import UNKNOWN, CommandStats
from .connection import Connection
from .fields import Explainer
from .hub import LOBBY, Delivery, Hub, Player
from .protocol import (
    ChannelName,
    CloseCode,
    CommandError,
    Envelope,
    ErrorCode,
    PlayerId,
    RequestId,
    RoomName,
    convert_args,
    encode_error,
    parse_frame,
)
from .text import Collapse, Text, text_collapser

__all__ = [
    "BAD_FRAME_CODES",
    "CommandContext",
    "CommandRegistry",
    "Forwarder",
    "NoArgs",
    "answer_error",
    "builtin_commands",
    "running_command",
]

logger = logging.getLogger("mudgate.commands")

ArgsT = TypeVar("ArgsT", bound=msgspec.Struct)
Handler = Callable[["CommandContext", ArgsT], Awaitable[None] | None]

# How many names `look` and `who` list; the counts beside them are exact.
MAX_LISTED_NAMES = 100

# Errors that mean the client sent something malformed (counted towards 1008), as opposed to
# a well-formed command that failed (a player not online, a channel not subscribed).
BAD_FRAME_CODES = frozenset(
    {ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_OP, ErrorCode.INVALID_ARGS}
)


def answer_error(conn: Connection, error: CommandError, *, reply: bool = True) -> None:
    """What a command's error does to the connection that sent it: a malformed frame counts
    towards ``bad_frame_limit`` (past it, 1008); otherwise, with ``reply``, the error goes
    back as an ``error`` event (``POST /commands`` answers it in its HTTP response instead)."""
    if error.code in BAD_FRAME_CODES and not conn.bad_frame():
        conn.close(CloseCode.POLICY_VIOLATION, "too many bad frames")
        return
    if reply:
        conn.send(encode_error(error.code, error.message, error.request_id, error.retry_after))


class NoArgs(msgspec.Struct):
    """The arguments of an op that takes none."""


class CommandContext:
    """What a command handler gets: who sent it, from where, and ways to answer."""

    __slots__ = ("conn", "hub", "player", "replied", "request_id")

    def __init__(self, hub: Hub, conn: Connection, player: Player, request_id: RequestId) -> None:
        self.hub = hub
        self.conn = conn
        self.player = player
        self.request_id = request_id
        self.replied = False

    @property
    def room(self) -> str:
        return self.player.room

    def reply(self, event: str, **fields: Any) -> None:
        """Send an event to the connection the command came from, echoing its ``id``."""
        self.reply_about(None, event, **fields)

    def reply_about(self, topic: str | None, event: str, /, **fields: Any) -> None:
        """``reply``, saying the answer is about ``topic`` (a channel joined or left): an SSE
        stream then names it in its resume string."""
        if self.request_id is not None:
            fields["id"] = self.request_id
        self.replied = True
        message = self.hub.event(event, **fields)
        if topic is not None:
            message.topic = topic
        self.hub.reply(self.conn, message)

    def broadcast(self, event: str, **fields: Any) -> None:
        """Send an event to everyone in the sender's room, the sender included."""
        self.hub.room_event(self.room, event, **fields)

    def send(self, player_id: str, event: str, **fields: Any) -> Delivery:
        """``Hub.send`` on behalf of the sender: an event to one player, kept for them if they
        left recently, counted against the sender's share of what waits."""
        return self.hub.send(player_id, event, sender=self.player.id, **fields)


@dataclass(frozen=True, slots=True)
class _Command(Generic[ArgsT]):
    handler: Handler[ArgsT]
    args_type: type[ArgsT]
    # Where args_type holds Text or a Name, found at registration (None: nowhere).
    collapse_text: Collapse | None
    # What a player is told when a frame does not fit args_type.
    explain: Explainer
    # Its fields as ``schema`` describes them (name, required, kind), found at registration:
    # a telnet player's every line asks for them.
    fields: tuple[tuple[str, bool, str], ...] = ()
    # One of builtin_commands(), not replaced by the game's own.
    builtin: bool = False


class Forwarder(Protocol):
    """Where the ops a game in another process answers go (``mudgate.game.GameLink``)."""

    def claims(self, op: str) -> bool:
        """Whether ``op`` is the game's to answer (its own, one it removed, or one nobody
        here knows: the game may, and it says unknown_op if not)."""
        ...

    def owns(self, op: str) -> bool:
        """Whether ``op`` is one of the game's own ops."""
        ...

    def schema(self) -> list[dict[str, Any]]:
        """The game's own ops, as ``CommandRegistry.schema`` describes them."""
        ...

    def submit(
        self, conn: Connection, player: Player, frame: Envelope, fields: dict[str, Any]
    ) -> None:
        """Hand the command to the game (or queue it); its answer comes later. Raises
        CommandError when it cannot be taken."""
        ...

    def behind(self, player_id: str) -> Awaitable[None] | None:
        """What to wait for before running a command of ``player_id`` here: their commands
        still with the game (None: nothing), so a player's commands take effect in order."""
        ...


class CommandRegistry:
    """Maps ops to handlers and runs a client's frame through them.

    With a ``forwarder`` (a game in a process of its own), the ops the game claims, and any
    op this registry does not know, are handed to it instead of run here.
    """

    def __init__(self, *, stats: CommandStats | None = None) -> None:
        self._commands: dict[str, _Command[Any]] = {}
        # Where dispatch counts and times each command (the gateway hands it one).
        self.stats = stats
        self.forwarder: Forwarder | None = None

    def __contains__(self, op: str) -> bool:
        """Whether ``op`` is a command: registered here, or a linked game's own."""
        return op in self._commands or (self.forwarder is not None and self.forwarder.owns(op))

    def runs_here(self, op: str) -> bool:
        """Whether ``op`` is registered in this registry (a linked game's are not)."""
        return op in self._commands

    @property
    def ops(self) -> list[str]:
        return sorted(self._commands)

    def own_ops(self) -> list[str]:
        """The ops a game registered itself (built-ins it replaced included)."""
        return sorted(op for op, command in self._commands.items() if not command.builtin)

    def removed_builtins(self) -> list[str]:
        """The built-in ops a game unregistered."""
        return sorted(set(BUILTIN_OPS) - set(self._commands))

    def mark_builtin(self) -> None:
        """Mark every op registered so far as a built-in (``builtin_commands`` does)."""
        for op, command in self._commands.items():
            self._commands[op] = replace(command, builtin=True)

    def register(
        self,
        op: str,
        args_type: type[ArgsT] = NoArgs,  # type: ignore[assignment]
        *,
        replace: bool = False,
    ) -> Callable[[Handler[ArgsT]], Handler[ArgsT]]:
        """Register the decorated function as the handler of ``op``.

        ``args_type`` is a msgspec Struct describing the op's fields; a frame that does not
        match it is answered with an ``invalid_args`` error before the handler runs, saying
        which field and what it takes (``mudgate.fields``). Its ``Text`` fields are collapsed
        first (``mudgate.text``), so a handler never sees the padding or invisible characters
        a player put in to forge a line, and its ``Name`` fields lower-cased. An op can be
        registered once; ``replace=True`` puts a game's own handler in the place of a
        built-in one (a ``look`` that describes the room, say).
        """

        def decorator(handler: Handler[ArgsT]) -> Handler[ArgsT]:
            if op in self._commands and not replace:
                raise ValueError(f"op {op!r} is already registered (replace=True to replace it)")
            self._commands[op] = _Command(
                handler,
                args_type,
                text_collapser(args_type),
                Explainer(args_type),
                tuple(
                    (f.encode_name, f.required, _kind(f.type))
                    for f in msgspec.structs.fields(args_type)
                ),
            )
            return handler

        return decorator

    def unregister(self, op: str) -> None:
        """Remove ``op`` (a built-in the game does not want, such as ``go`` in a game whose
        rooms are reached by exits); a client that sends it gets ``unknown_op``."""
        if self._commands.pop(op, None) is None:
            raise ValueError(f"op {op!r} is not registered")

    def schema(self, ops: list[str] | None = None) -> list[dict[str, Any]]:
        """Every op (or those of ``ops``) and its fields, in order, with whether each is
        required: what the ``help`` command tells clients, so a page can turn typed lines into
        frames for a game's own verbs. A linked game's ops are included."""
        described: list[dict[str, Any]] = []
        forwarder = self.forwarder
        for op in self.ops if ops is None else ops:
            if forwarder is not None and forwarder.claims(op):
                continue
            described.append(
                {
                    "op": op,
                    "fields": [
                        {"name": name, "required": required, "type": kind}
                        for name, required, kind in self._commands[op].fields
                    ],
                }
            )
        if forwarder is not None and ops is None:
            described = sorted(
                [*described, *forwarder.schema()], key=lambda entry: str(entry["op"])
            )
        return described

    async def dispatch(self, hub: Hub, conn: Connection, raw: str | bytes) -> CommandError | None:
        """Parse and run one frame from ``conn``; returns the error it caused, if any.

        The caller answers the error the way its transport does (an event, an HTTP status).
        With ``stats``, every frame is counted and timed under its op, with its error code; a
        frame that cannot be read (bad JSON, no op) under ``command_stats.UNKNOWN``.
        """
        stats = self.stats
        started = 0.0 if stats is None else stats.clock()
        op = UNKNOWN
        # The error is returned from its except clause, never kept in a variable: a local
        # holding it would hold its traceback, which holds this frame and the frame's text,
        # a cycle only the garbage collector undoes (each bad frame's text kept until then).
        try:
            frame, fields = parse_frame(raw)
            op = frame.op
            forwarded = await self._run(hub, conn, frame, fields)
        except CommandError as error:
            if stats is not None:
                stats.observe(op, stats.clock() - started, error.code)
            return error
        if stats is not None and not forwarded:  # a linked game's: counted when it answers
            stats.observe(op, stats.clock() - started, None)
        return None

    async def _run(
        self, hub: Hub, conn: Connection, frame: Envelope, fields: dict[str, Any]
    ) -> bool:
        """Run the command, or hand it to the linked game (True)."""
        wait, over_limit = hub.charge_message(conn.player_id)
        if over_limit:
            conn.close(CloseCode.RATE_LIMITED, "too many messages")
        if wait:
            raise CommandError(
                ErrorCode.RATE_LIMITED,
                f"too many messages: wait {wait:.1f} s",
                frame.id,
                retry_after=round(wait, 3),
            )
        forwarder = self.forwarder
        if forwarder is not None and forwarder.claims(frame.op):
            player = hub.player(conn.player_id)
            if player is None:  # the connection is being closed
                raise CommandError(ErrorCode.NOT_CONNECTED, "not connected", frame.id)
            forwarder.submit(conn, player, frame, fields)
            return True
        if forwarder is not None:
            earlier = forwarder.behind(conn.player_id)
            if earlier is not None:  # `walk north` then `say hi`: said in the courtyard
                await asyncio.shield(earlier)  # shared by the player's waiters: never cancelled
        await self.execute(hub, conn, frame, fields)
        return False

    async def execute(
        self, hub: Hub, conn: Connection, frame: Envelope, fields: dict[str, Any]
    ) -> None:
        """Run one command here: check its fields, call its handler, answer it. Raises
        CommandError. (A linked game's process runs the commands it is handed through this.)"""
        command = self._commands.get(frame.op)
        if command is None:
            raise CommandError(ErrorCode.UNKNOWN_OP, f"unknown op {frame.op!r}", frame.id)
        if command.collapse_text is not None:
            command.collapse_text(fields)
        args = convert_args(fields, command.args_type, frame, command.explain)
        player = hub.player(conn.player_id)
        if player is None:  # the connection is being closed
            raise CommandError(ErrorCode.NOT_CONNECTED, "not connected", frame.id)
        ctx = CommandContext(hub, conn, player, frame.id)
        try:
            result = command.handler(ctx, args)
            if inspect.isawaitable(result):
                await result
        except CommandError as error:
            error.request_id = frame.id
            raise
        except Exception:
            logger.exception("command %r from %s failed", frame.op, conn.player_id)
            raise CommandError(ErrorCode.INTERNAL, "the command failed", frame.id) from None
        # A frame with an id always gets exactly one answer.
        if frame.id is not None and not ctx.replied:
            ctx.reply("ok", op=frame.op)


_RUN = CommandRegistry.execute.__code__


def running_command(frame: FrameType) -> str | None:
    """The command a frame of the event loop's thread belongs to, in words ("command 'roll'
    from alice"), or None: how ``LoopLag`` names what blocked the loop."""
    if frame.f_code is not _RUN:
        return None
    variables = frame.f_locals
    parsed, conn = variables.get("frame"), variables.get("conn")
    op = getattr(parsed, "op", "?")
    return f"command {op!r} from {getattr(conn, 'player_id', '?')}"


# The built-in commands' arguments.


class Go(msgspec.Struct):
    room: RoomName


class Say(msgspec.Struct):
    text: Text


class Tell(msgspec.Struct):
    to: PlayerId
    text: Text


class ChannelArgs(msgspec.Struct):
    channel: ChannelName


class Chat(msgspec.Struct):
    channel: ChannelName
    text: Text


def _kind(annotation: Any) -> str:
    """A field's type as a client needs it: text, integer, number, boolean or other."""
    info = msgspec.inspect.type_info(annotation)
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    kinds = {
        msgspec.inspect.StrType: "text",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.BoolType: "boolean",
    }
    return kinds.get(type(info), "other")


def builtin_commands() -> CommandRegistry:
    """A registry holding the built-in commands; a game adds its own to it."""
    commands = CommandRegistry()

    @commands.register("help")
    def help_(ctx: CommandContext, args: NoArgs) -> None:
        # The registry as it is when asked: a game's own verbs and fields included.
        ctx.reply("help", commands=commands.schema())

    @commands.register("ping")
    def ping(ctx: CommandContext, args: NoArgs) -> None:
        ctx.reply("pong")

    async def describe_room(ctx: CommandContext) -> None:
        # Everyone in the room, on every node.
        occupants = await ctx.hub.occupants(ctx.room)
        ctx.reply(
            "room",
            room=ctx.room,
            occupants=occupants[:MAX_LISTED_NAMES],
            occupant_count=len(occupants),
        )

    @commands.register("look")
    async def look(ctx: CommandContext, args: NoArgs) -> None:
        await describe_room(ctx)

    async def go(ctx: CommandContext, args: Go) -> None:
        ctx.hub.move(ctx.player, args.room)
        await describe_room(ctx)

    commands.register("go", Go)(go)
    commands.register("join", Go)(go)

    @commands.register("leave")
    async def leave(ctx: CommandContext, args: NoArgs) -> None:
        await go(ctx, Go(room=LOBBY))

    @commands.register("say", Say)
    def say(ctx: CommandContext, args: Say) -> None:
        ctx.broadcast("say", **{"from": ctx.player.id, "text": args.text})

    @commands.register("tell", Tell)
    async def tell(ctx: CommandContext, args: Tell) -> None:
        message = ctx.hub.event("tell", **{"from": ctx.player.id, "to": args.to, "text": args.text})
        # Waits for the cluster's answer, so a player nobody knows is an error here too.
        delivery = await ctx.hub.tell(args.to, message, sender=ctx.player.id)
        if delivery is Delivery.UNKNOWN_PLAYER:
            raise CommandError(ErrorCode.PLAYER_NOT_FOUND, f"no player {args.to!r} is online")
        if delivery is Delivery.MAILBOX_FULL:
            raise CommandError(
                ErrorCode.MAILBOX_FULL, f"{args.to} is away and cannot take more messages"
            )
        if delivery is Delivery.SENDER_FULL:
            limit = ctx.hub.settings.max_pending_per_sender
            raise CommandError(
                ErrorCode.MAILBOX_FULL,
                f"you have {limit} messages waiting for players who are away; wait for them "
                "to come back",
            )
        if args.to != ctx.player.id:
            ctx.reply("told", to=args.to, text=args.text)

    @commands.register("subscribe", ChannelArgs)
    def subscribe(ctx: CommandContext, args: ChannelArgs) -> None:
        if not ctx.hub.subscribe(ctx.player, args.channel):
            limit = ctx.hub.settings.max_subscriptions_per_player
            raise CommandError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {limit} channels per player"
            )
        position = ctx.hub.position(channel_topic(args.channel))
        ctx.reply_about(
            channel_topic(args.channel), "subscribed", channel=args.channel, position=position
        )

    @commands.register("unsubscribe", ChannelArgs)
    def unsubscribe(ctx: CommandContext, args: ChannelArgs) -> None:
        if not ctx.hub.unsubscribe(ctx.player, args.channel):
            raise CommandError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {args.channel!r}")
        ctx.reply_about(channel_topic(args.channel), "unsubscribed", channel=args.channel)

    @commands.register("chat", Chat)
    def chat(ctx: CommandContext, args: Chat) -> None:
        if args.channel not in ctx.player.channels:
            raise CommandError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {args.channel!r}")
        ctx.hub.channel_event(args.channel, "chat", **{"from": ctx.player.id, "text": args.text})

    @commands.register("who")
    async def who(ctx: CommandContext, args: NoArgs) -> None:
        players = await ctx.hub.who()
        ctx.reply("who", players=players[:MAX_LISTED_NAMES], count=len(players))

    commands.mark_builtin()
    return commands


BUILTIN_OPS = tuple(builtin_commands().ops)
