"""``Game``: a game's commands, hooks and timers, in one object that runs in the gateway's
process or in a process of its own, unchanged.

    game = Game(commands())

    @game.hooks.on_connect
    def welcome(player_id: str) -> None:
        game.hub.send(player_id, "narrate", text="Welcome.")

    @game.every(30)  # once per cluster
    async def bard(hub: Hub) -> None:
        if await hub.players_in("courtyard"):
            hub.room_event("courtyard", "narrate", text="The bard sings.")

``mudgate serve --game mygame:game`` runs it in a process of its own, linked to the gateway
(docs/game-link.md); ``Gateway(settings, game=game)`` runs it in the gateway's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..commands import CommandRegistry, builtin_commands
from ..hooks import Hooks
from ..render import Renderer, Renderers

if TYPE_CHECKING:
    from ..hub import Hub

__all__ = ["Game", "Timer"]

logger = logging.getLogger("mudgate.game")

TimerFunction = Callable[["Hub"], Awaitable[None] | None]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Timer:
    """A function of the game's run every ``seconds``: once per cluster (the node holding the
    timer's lease runs it), or on every node with ``each_node``."""

    name: str
    seconds: float
    function: TimerFunction
    each_node: bool

    @property
    def lease_seconds(self) -> float:
        """How long a holder keeps the timer's lease without renewing it: two periods and a
        second, so a live holder always renews in time and a dead one is replaced within it."""
        return self.seconds * 2 + 1


class Game:
    """A game: its ``commands`` (by default the built-ins only), its ``hooks``, its timers
    (``every``) and what it does before it is ready (``on_start``).

    ``hub`` is what the game sends with and asks: the gateway's ``Hub`` in its process, or the
    same API over the link from a process of its own. It is there once the game has started.
    """

    def __init__(self, commands: CommandRegistry | None = None, *, name: str = "game") -> None:
        self.name = name
        self.commands = builtin_commands() if commands is None else commands
        self.hooks = Hooks()
        # How its events look to telnet players (mudgate.render); in a process of its own,
        # the gateway takes them from MUDGATE_TELNET_RENDERERS instead.
        self.renderers = Renderers()
        self.timers: list[Timer] = []
        self._on_start: list[Callable[[Hub], Awaitable[None] | None]] = []
        self._hub: Hub | None = None
        self._running: list[asyncio.Task[None]] = []

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError(
                "the game has not started: use game.hub in commands, hooks, timers and "
                "on_start functions, not at import time"
            )
        return self._hub

    def render(self, event: str) -> Callable[[Renderer], Renderer]:
        """Decorator: how events named ``event`` look to telnet players (``mudgate.render``)."""
        return self.renderers.event(event)

    def every(self, seconds: float, *, each_node: bool = False) -> Callable[[F], F]:
        """Run the decorated ``function(hub)`` every ``seconds``, once per cluster: on one
        node at a time (a lease on the backplane; a single gateway holds it alone), so two
        nodes or workers do not both sing the bard's song. ``each_node=True`` runs it on every
        node, for what is about that node's own players."""
        if seconds <= 0:
            raise ValueError("a timer's period must be positive")

        def decorator(function: F) -> F:
            name = getattr(function, "__qualname__", repr(function))
            if any(timer.name == name for timer in self.timers):
                raise ValueError(f"a timer named {name!r} is already registered")
            self.timers.append(Timer(name, seconds, function, each_node))
            return function

        return decorator

    def on_start(self, function: F) -> F:
        """Call ``function(hub)`` (awaited if a coroutine) when the game starts, before it
        takes commands: loading a world, say. If it raises, the game does not start."""
        self._on_start.append(function)
        return function

    def spawn(
        self, coroutine: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coroutine`` as a task of the game's: if it raises, the exception is logged
        with its traceback at once (a bare ``asyncio.create_task`` logs it only when the task
        is garbage-collected, which a task kept in a variable never is); ``stop`` cancels it."""
        task = asyncio.create_task(coroutine, name=name)
        self._running.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._running:
            self._running.remove(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("the game's task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self, hub: Hub) -> None:
        """Bind ``hub`` and run the ``on_start`` functions."""
        self._hub = hub
        for function in self._on_start:
            result = function(hub)
            if inspect.isawaitable(result):
                await result

    def start_timers(self) -> None:
        """Start every timer, each its own task."""
        for timer in self.timers:
            self.spawn(self._run_timer(timer), name=f"mudgate timer {timer.name}")

    async def stop(self) -> None:
        """Stop the timers and the hooks still running, and wait for them."""
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        self._running.clear()
        await self.hooks.close()

    async def _run_timer(self, timer: Timer) -> None:
        hub = self.hub
        lease = f"timer:{self.name}:{timer.name}"
        while True:
            await asyncio.sleep(timer.seconds)
            await self.tick(timer, hub, lease)

    async def tick(self, timer: Timer, hub: Hub, lease: str) -> bool:
        """Run ``timer`` once if this node holds its lease (or it runs on each node); whether it
        ran. A timer that raises is logged and runs again next period."""
        try:
            if not timer.each_node and not await hub.hold_lease(lease, timer.lease_seconds):
                return False
            result = timer.function(hub)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("timer %s failed (it runs again in %g s)", timer.name, timer.seconds)
        return True
