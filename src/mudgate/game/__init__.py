"""A game: its commands, hooks and timers (``Game``), run in the gateway's process or in one of
its own, linked to the gateway (``GameLink`` on the gateway's side, ``runner`` on the game's;
docs/game-link.md)."""

from .api import Game, Timer
from .link import GameLink

__all__ = ["Game", "GameLink", "Timer"]
