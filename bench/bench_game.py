"""The game of the game benchmarks (bench/game_split.py, bench/game_restart.py): one op, ``act``,
that answers the sender and tells the sender's room, so a command costs one reply and one room
event whichever process the game runs in.

In a process of its own (what the benchmarks start; bench/ on PYTHONPATH)::

    mudgate serve --game bench_game:game

In the gateway's process, served the way ``mudgate serve`` serves::

    python bench/bench_game.py --port 8000
"""

from __future__ import annotations

import argparse

from mudgate import CommandContext, Game, NoArgs, builtin_commands

# How the room event's text starts: what the load generator counts (the reply is ``acted``).
ROOM_MARKER = b'"event":"acted_here"'


def make_game() -> Game:
    commands = builtin_commands()
    game = Game(commands, name="bench")

    @commands.register("act")
    def act(ctx: CommandContext, args: NoArgs) -> None:
        ctx.reply("acted")
        ctx.broadcast("acted_here", by=ctx.player.id)

    return game


# What `mudgate serve --game bench_game:game` runs.
game = make_game()


def main() -> None:
    # Only the gateway's process needs the server; the game's own process does not load it.
    from mudgate import Gateway, Settings, create_app, serve  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="the bench game in the gateway's process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    gateway = Gateway(Settings(port=args.port), game=make_game())
    serve(create_app(gateway), gateway, args.log_level)


if __name__ == "__main__":
    main()
