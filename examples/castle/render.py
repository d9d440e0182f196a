"""How the castle's own events look to telnet players (Mudlet, TinTin++, telnet).

A module of its own, with no game state, so that the gateway can load it without the game
when the game runs in a process of its own::

    MUDGATE_TELNET_RENDERERS=examples.castle.render:renderers \
        mudgate serve --game examples.castle.game:game --telnet-port 54732

(``make example`` does.) A game in the gateway's process takes them with
``game.renderers.update(renderers)``.
"""

from __future__ import annotations

from typing import Any

from mudgate import Renderers
from mudgate.render import bold, clean, colour

renderers = Renderers()


@renderers.event("rolled")
def rolled(event: dict[str, Any]) -> str:
    rolls = " + ".join(str(r) for r in event.get("rolls", []))
    total = colour(bold(str(event.get("total"))), "green")
    player, dice = clean(event.get("player", "")), clean(event.get("dice", ""))
    return f"{player} rolls {dice}: {rolls} = {total}"


@renderers.event("narrate")
def narrate(event: dict[str, Any]) -> str:
    text = clean(event.get("text", ""))
    speaker = event.get("speaker")
    return colour(f"The {clean(speaker)} sings: {text}", "cyan") if speaker else text
