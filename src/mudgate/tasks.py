"""``BackgroundTask``: one long-running task a part owns, started and stopped with the gateway.

Every part that runs in the background (the health watch's tick, the webhook notifier, the loop
lag probe, the Redis backplane) starts its task the same way and stops it the same way: cancel
with a message that says why, then wait for it to end, so nothing is left running after
shutdown and no ``CancelledError`` is swallowed on the way (``cancel_and_wait``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine
from typing import Any

__all__ = ["RECANCEL_SECONDS", "BackgroundTask", "cancel_and_wait"]

# How long a cancelled task has to end before it is cancelled again (cancel_and_wait).
RECANCEL_SECONDS = 0.1


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], reason: str) -> None:
    """Cancel ``tasks`` with ``reason`` and return once every one has ended.

    One still running ``RECANCEL_SECONDS`` later is cancelled again: on Python 3.11,
    ``asyncio.wait_for`` (redis-py writes to Redis under it) returns what it waited for instead
    of raising when the cancellation comes just as that completes (CPython gh-86296), and the
    task's loop runs on, so one cancellation may never end it. A cancellation of the caller
    meanwhile is raised once they have all ended, so none is left running.
    """
    pending = {task for task in tasks if not task.done()}
    interrupted: asyncio.CancelledError | None = None
    while pending:
        for task in pending:
            task.cancel(reason)
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        except asyncio.CancelledError as error:
            interrupted = error  # raised below, once the tasks have ended
    if interrupted is not None:
        raise interrupted


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
            await cancel_and_wait((task,), reason)
