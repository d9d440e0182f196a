"""``BackgroundTask``: one long-running task a part owns, started and stopped with the gateway.

Every part that runs in the background (the health watch's tick, the webhook notifier, the loop
lag probe, the Redis backplane) starts its task the same way and stops it the same way: cancel
with a message that says why, then wait for it to end, so nothing is left running after
shutdown and no ``CancelledError`` is swallowed on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["BackgroundTask"]


class BackgroundTask:
    """A named task that is either running or not; ``stop`` is idempotent."""

    __slots__ = ("_task", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` as this task; raises RuntimeError if it already runs."""
        if self.running:
            coroutine.close()
            raise RuntimeError(f"{self.name} is already running")
        self._task = asyncio.get_running_loop().create_task(coroutine, name=self.name)

    async def stop(self, reason: str = "mudgate: shutting down") -> None:
        """Cancel the task and wait until it has ended (it may still clean up)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel(reason)
            await asyncio.wait((task,))
