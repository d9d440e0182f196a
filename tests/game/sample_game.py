"""A game for the game-link tests: each op exercises one thing the link must carry.

``GREETING`` is what ``hello`` answers: the --reload test rewrites it in a copy of this file.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from mudgate import CommandContext, CommandError, ErrorCode, Game, Hub, NoArgs, builtin_commands

GREETING = "hello from the first game"


class Text(msgspec.Struct):
    text: str = ""


class Seconds(msgspec.Struct):
    seconds: float


def make_game() -> Game:
    commands = builtin_commands()
    commands.unregister("go")
    game = Game(commands, name="sample")

    @commands.register("hello")
    def hello(ctx: CommandContext, args: NoArgs) -> None:
        ctx.reply("greeting", text=GREETING, pid=os.getpid())

    @commands.register("echo", Text)
    def echo(ctx: CommandContext, args: Text) -> None:
        ctx.reply("echo", text=args.text)

    @commands.register("wait", Seconds)
    async def wait(ctx: CommandContext, args: Seconds) -> None:
        await asyncio.sleep(args.seconds)
        ctx.reply("waited", seconds=args.seconds)

    @commands.register("freeze", Seconds)
    def freeze(ctx: CommandContext, args: Seconds) -> None:
        time.sleep(args.seconds)  # the game's loop stops: it reads nothing meanwhile

    @commands.register("crash")
    def crash(ctx: CommandContext, args: NoArgs) -> None:
        os._exit(3)

    @commands.register("refuse")
    def refuse(ctx: CommandContext, args: NoArgs) -> None:
        raise CommandError(ErrorCode.INVALID_ARGS, "not today")

    @commands.register("busy")
    def busy(ctx: CommandContext, args: NoArgs) -> None:
        raise CommandError(ErrorCode.RATE_LIMITED, "the smith is busy", retry_after=2.5)

    @commands.register("remember", Text)
    def remember(ctx: CommandContext, args: Text) -> None:
        ctx.hub.save_state(ctx.player.id, {"note": args.text})

    @commands.register("recall")
    def recall(ctx: CommandContext, args: NoArgs) -> None:
        ctx.reply("recalled", state=ctx.hub.state_of(ctx.player.id))

    @commands.register("teleport", Text)
    async def teleport(ctx: CommandContext, args: Text) -> None:
        ctx.hub.move_player(ctx.player.id, args.text)
        ctx.reply("here", room=ctx.room, others=await ctx.hub.players_in(ctx.room))

    @commands.register("shout", Text)
    def shout(ctx: CommandContext, args: Text) -> None:
        ctx.broadcast("shouted", text=args.text)

    @commands.register("whisper", Text)
    async def whisper(ctx: CommandContext, args: Text) -> None:
        delivery = await ctx.hub.tell(args.text, "whispered", sender=ctx.player.id, text="psst")
        ctx.reply("whisper_sent", delivery=delivery.value)

    @game.hooks.on_connect
    def welcome(player_id: str) -> None:
        game.hub.send(player_id, "narrate", text=f"welcome, {player_id}")

    @game.hooks.on_room_change
    def moved(player_id: str, old_room: str, new_room: str) -> None:
        game.hub.room_event(old_room, "narrate", text=f"{player_id} left for {new_room}")

    @game.on_start
    async def warm_up(hub: Hub) -> None:  # asks the gateway before the game is ready
        await hub.who()

    @game.every(0.05)
    def tick(hub: Hub) -> None:
        hub.channel_event("clock", "tick", pid=os.getpid())

    return game


game = make_game()
