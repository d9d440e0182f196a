"""Castle: a tiny MUD on mudgate, using only its public API.

A few rooms with exits, a bard who sings on a timer, dice, and a ``look`` that describes the
room. ``game`` is the whole game: its commands, its hooks and the bard.

Run it in a process of its own, behind the gateway, so that a restart (SIGHUP, or ``--reload``
on every saved file) keeps every player connected (http://127.0.0.1:54731/play)::

    .venv/bin/mudgate serve --game examples.castle.game:game --reload

Or in the gateway's process, as part of the castle's own FastAPI app (its home page at ``/``,
the gateway mounted at ``/mud``; play at http://127.0.0.1:54731/mud/play)::

    .venv/bin/python -m examples.castle.game
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from examples.castle.render import renderers
from mudgate import (
    CommandContext,
    CommandError,
    CommandRegistry,
    ErrorCode,
    Game,
    Gateway,
    Hub,
    Name,
    NoArgs,
    Settings,
    builtin_commands,
    mount,
    player_text,
    serve,
    serve_workers,
)


@dataclass(frozen=True)
class Room:
    title: str
    description: str
    exits: dict[str, str] = field(default_factory=dict)


# The player starts in "lobby", the gatehouse.
ROOMS = {
    "lobby": Room(
        "The Gatehouse",
        "Torches gutter in iron brackets. The portcullis is up.",
        {"north": "courtyard"},
    ),
    "courtyard": Room(
        "The Courtyard",
        "A wide yard of trodden snow. A bard tunes a lute by the well.",
        {"south": "lobby", "east": "hall", "up": "tower"},
    ),
    "hall": Room("The Great Hall", "Long tables, a roaring hearth.", {"west": "courtyard"}),
    "tower": Room("The Tower Top", "Wind. Stars. The whole valley below.", {"down": "courtyard"}),
}
SONGS = (
    "The bard sings of a dragon who hoarded teaspoons.",
    "The bard hums a tune about the frozen river.",
    "The bard plays a jig; somewhere a goat dances.",
)
DICE = re.compile(r"^(\d{1,2})d(\d{1,3})$")


class Walk(msgspec.Struct):
    direction: Name  # one word, lower-cased: "North" is "north"


class Roll(msgspec.Struct):
    dice: Name = "1d6"  # one word; roll() checks that it reads like 2d6


class Shout(msgspec.Struct):
    text: Annotated[str, player_text(max_length=200)]  # a player's text, at most 200


def commands() -> CommandRegistry:
    """The built-in commands, with the game's own look, walk, roll and shout. Rooms are
    reached through their exits only: the built-in go, join and leave, which move a player to
    any room by name, are not part of this game."""
    registry = builtin_commands()
    for op in ("go", "join", "leave"):
        registry.unregister(op)

    @registry.register("look", replace=True)
    async def look(ctx: CommandContext, args: NoArgs) -> None:
        room = ROOMS.get(ctx.room)
        # Everyone in the room, on every node of a cluster.
        others = [p for p in await ctx.hub.players_in(ctx.room) if p != ctx.player.id]
        ctx.reply(
            "room",
            room=ctx.room,
            title=room.title if room else ctx.room,
            description=room.description if room else "An unremarkable place.",
            exits=sorted(room.exits) if room else [],
            occupants=others,
        )

    @registry.register("walk", Walk)
    async def walk(ctx: CommandContext, args: Walk) -> None:
        room = ROOMS.get(ctx.room)
        destination = room.exits.get(args.direction) if room else None
        if destination is None:
            raise CommandError(ErrorCode.INVALID_ARGS, f"you cannot go {args.direction} here")
        ctx.hub.move_player(ctx.player.id, destination)
        await look(ctx, NoArgs())
        # A game's own GMCP, for MUD clients' maps (other clients get it as any event).
        ctx.reply("gmcp", package="Room.Area", data={"name": "castle", "room": destination})
        if destination == "tower":  # after the room it belongs to
            ctx.reply("narrate", text="You are out of breath.")

    @registry.register("roll", Roll)
    def roll(ctx: CommandContext, args: Roll) -> None:
        match = DICE.match(args.dice)
        if match is None or int(match[1]) < 1 or int(match[2]) < 2:
            raise CommandError(
                ErrorCode.INVALID_ARGS, "dice look like 2d6 (1-99 dice, 2-999 sides)"
            )
        rolls = [random.randint(1, int(match[2])) for _ in range(int(match[1]))]
        ctx.broadcast("rolled", player=ctx.player.id, dice=args.dice, rolls=rolls, total=sum(rolls))

    @registry.register("shout", Shout)
    def shout(ctx: CommandContext, args: Shout) -> None:
        for room in ROOMS:
            ctx.hub.room_event(room, "narrate", text=f"{ctx.player.id} shouts: {args.text}")

    return registry


def make_game(bard_every_seconds: float = 30.0) -> Game:
    """The castle: its commands, the welcome and the footsteps, and the bard."""
    game = Game(commands(), name="castle")
    game.renderers.update(renderers)  # its events as telnet players see them (render.py)

    @game.hooks.on_connect
    def welcome(player_id: str) -> None:
        game.hub.send(
            player_id, "narrate", text="Welcome to the castle. Try: look, walk north, help."
        )

    @game.hooks.on_room_change
    def footsteps(player_id: str, old_room: str, new_room: str) -> None:
        # Those left behind hear them go (the walker is already elsewhere).
        game.hub.room_event(old_room, "narrate", text=f"{player_id} walks away.")

    # The NPC: sings in the courtyard on a timer, once per cluster however many nodes run.
    @game.every(bard_every_seconds)
    async def bard(hub: Hub) -> None:
        if await hub.players_in("courtyard"):
            hub.room_event("courtyard", "narrate", speaker="bard", text=random.choice(SONGS))

    return game


# What `mudgate serve --game examples.castle.game:game` runs.
game = make_game()


def create_game(
    settings: Settings | None = None, bard_every_seconds: float = 30.0
) -> tuple[FastAPI, Gateway]:
    """The castle in the gateway's process: its own app, with the gateway mounted at /mud;
    and the gateway, which ``serve`` serves it with."""
    gateway = Gateway(settings, game=make_game(bard_every_seconds))
    app = FastAPI(title="Castle")
    mount(app, "/mud", gateway)

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return '<h1>Castle</h1><p><a href="/mud/play">Play</a></p>'

    return app, gateway


if __name__ == "__main__":
    settings = Settings()
    if settings.workers > 1:  # MUDGATE_WORKERS: each worker builds its own game
        serve_workers(create_game, settings)
    else:
        serve(*create_game(settings))
