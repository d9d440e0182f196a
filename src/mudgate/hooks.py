"""Callbacks a game registers for players coming online, going offline and changing rooms.

    @hub.hooks.on_connect
    async def greet(player_id: str) -> None:
        hub.send(player_id, "narrate", text="The gate creaks open.")

A hook may be a plain function or a coroutine function (run as its own task). A hook that
raises is logged and the others still run: game code can never break a player's connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Hooks"]

logger = logging.getLogger("mudgate.hooks")

# Coroutine hooks running at once; past it a hook call is skipped (and logged), so a game hook
# that hangs cannot pile up a task per player who comes and goes.
MAX_RUNNING_HOOKS = 1000

F = TypeVar("F", bound=Callable[..., Any])


class Hooks:
    """The game's callbacks: ``on_connect(player_id)``, ``on_disconnect(player_id)``,
    ``on_room_change(player_id, old_room, new_room)``, and ``on_return(player_id, topic)``,
    which decides."""

    def __init__(self) -> None:
        self._connect: list[Callable[..., Any]] = []
        self._disconnect: list[Callable[..., Any]] = []
        self._room_change: list[Callable[..., Any]] = []
        self._return: list[Callable[[str, str], bool]] = []
        # Coroutine hooks still running (each leaves the set when it finishes).
        self._running: set[asyncio.Task[Any]] = set()
        self.skipped = 0

    def on_connect(self, hook: F) -> F:
        """Call ``hook(player_id)`` when a player comes online (their first connection)."""
        self._connect.append(hook)
        return hook

    def on_disconnect(self, hook: F) -> F:
        """Call ``hook(player_id)`` when a player's last connection closes."""
        self._disconnect.append(hook)
        return hook

    def on_room_change(self, hook: F) -> F:
        """Call ``hook(player_id, old_room, new_room)`` when a player moves."""
        self._room_change.append(hook)
        return hook

    def on_return(self, hook: Callable[[str, str], bool]) -> Callable[[str, str], bool]:
        """Ask ``hook(player_id, topic)`` whether a player who reconnects may be put back in
        the room (``topic`` ``"room:NAME"``) or channel (``"channel:NAME"``) they were in
        before: False keeps them out (a room's player starts in the lobby instead). A plain
        function, asked while the player connects (it must not wait); without one, players go
        back where they were. A hook that raises counts as False."""
        if inspect.iscoroutinefunction(hook):
            raise TypeError("an on_return hook decides at once: a plain function, not async")
        self._return.append(hook)
        return hook

    def may_return(self, player_id: str, topic: str) -> bool:
        """Whether every ``on_return`` hook lets ``player_id`` back into ``topic``."""
        for hook in self._return:
            try:
                if not hook(player_id, topic):
                    return False
            except Exception:
                logger.exception("hook %s failed", getattr(hook, "__qualname__", hook))
                return False
        return True

    def connected(self, player_id: str) -> None:
        self._run(self._connect, player_id)

    def disconnected(self, player_id: str) -> None:
        self._run(self._disconnect, player_id)

    def moved(self, player_id: str, old_room: str, new_room: str) -> None:
        self._run(self._room_change, player_id, old_room, new_room)

    def _run(self, hooks: list[Callable[..., Any]], *args: str) -> None:
        for hook in hooks:
            try:
                result = hook(*args)
            except Exception:
                logger.exception("hook %s failed", getattr(hook, "__qualname__", hook))
                continue
            if inspect.isawaitable(result):
                if len(self._running) >= MAX_RUNNING_HOOKS:
                    self.skipped += 1
                    if inspect.iscoroutine(result):
                        result.close()
                    logger.error(
                        "hook %s skipped: %d hooks still running",
                        getattr(hook, "__qualname__", hook),
                        len(self._running),
                    )
                    continue
                task = asyncio.ensure_future(result)
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("hook failed", exc_info=task.exception())

    async def close(self) -> None:
        """Cancel the hooks still running (at shutdown) and wait for them."""
        for task in list(self._running):
            task.cancel("mudgate: shutting down")
        if self._running:
            await asyncio.wait(self._running)
