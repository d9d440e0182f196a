"""The game's processes: started by the gateway (``mudgate serve --game``), each one a fresh
interpreter importing the game's code anew, replaced on SIGHUP, on ``--reload`` and when one
crashes (after a backoff, so a game that cannot start does not spin)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["GameProcesses", "source_root"]

logger = logging.getLogger("mudgate.game")

# Backoff between start attempts after a crash or a failed start: 0.5 s, doubling, at most 30.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# How long a retired game has to exit by itself before it is killed.
RETIRE_GRACE = 5.0


def source_root(spec: str) -> Path | None:
    """The directory holding the game's top-level package (or module), without importing it:
    what ``--reload`` watches."""
    top = spec.split(":", 1)[0].split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    return None if found.origin is None else Path(found.origin).parent


class GameProcesses:
    """Starts, watches and stops the game's processes."""

    def __init__(
        self,
        spec: str,
        address: str,
        token: str,
        *,
        on_exit: Callable[[int, int | None, bool], None],
        reload: bool = False,
        on_change: Callable[[str], None] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.start_timeout = start_timeout
        self.spec = spec
        self.address = address
        self._token = token
        self._on_exit = on_exit
        self._reload = reload
        self._on_change = on_change
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._attached: set[int] = set()
        self._watchers: set[asyncio.Task[Any]] = set()
        self._failures = 0
        self._next_start: float | None = None
        self._stopping = False
        self._reloader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.spawn()
        if self._reload:
            self._reloader = asyncio.create_task(self._watch_sources(), name="mudgate --reload")
            self._watch(self._reloader)

    async def spawn(self) -> int | None:
        """Start a fresh game process; its pid (None if it could not be started: then it is
        tried again after the backoff)."""
        env = dict(os.environ, MUDGATE_GAME_TOKEN=self._token)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mudgate", "game", self.spec, "--link", self.address, env=env
            )
        except OSError:
            logger.exception("the game process could not be started; trying again")
            if not self._stopping and self._next_start is None:
                self._watch(asyncio.create_task(self.respawn()))
            return None
        self._processes[process.pid] = process
        logger.info("game process %s started (%s)", process.pid, self.spec)
        self._watch(asyncio.create_task(self._wait(process)))
        self._watch(asyncio.create_task(self._attach_deadline(process.pid)))
        if self._stopping:  # stopped while it started
            self.kill(process.pid)
        return process.pid

    async def _attach_deadline(self, pid: int) -> None:
        """A process that has not attached within the start's time (its import hangs) is
        killed: its exit counts as a failed start, and with no game running a new one is tried."""
        await asyncio.sleep(self.start_timeout + 1.0)
        if pid in self._processes and pid not in self._attached:
            logger.error(
                "game process %s did not attach in %g s: killing it", pid, self.start_timeout
            )
            self.kill(pid)

    async def respawn(self) -> None:
        """Start a new process after the backoff (the running one crashed, or none started)."""
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2**self._failures)
        self._failures += 1
        self._next_start = asyncio.get_running_loop().time() + delay
        await asyncio.sleep(delay)
        self._next_start = None
        if not self._stopping:
            await self.spawn()

    def next_start_in(self) -> float:
        """Seconds until the next planned start attempt (0 if none is planned)."""
        if self._next_start is None:
            return 0.0
        return max(0.0, self._next_start - asyncio.get_running_loop().time())

    def started(self, pid: int) -> None:
        """Process ``pid`` took over: the backoff starts again from the beginning."""
        self._failures = 0
        self._attached.add(pid)

    def failed(self, pid: int, none_running: bool) -> None:
        """Process ``pid`` did not start. With no game running, try again after a backoff
        (which ``respawn`` lengthens)."""
        self.retire(pid)  # its exit is not news; it should be on its way out
        if none_running and not self._stopping and self._next_start is None:
            self._watch(asyncio.create_task(self.respawn()))

    def retire(self, pid: int) -> None:
        """``pid`` was told to retire: kill it if it has not exited after a grace period."""
        if pid in self._processes:
            self._attached.add(pid)  # its exit is not news
            self._watch(asyncio.create_task(self._kill_later(pid, RETIRE_GRACE)))

    def kill(self, pid: int) -> None:
        process = self._processes.get(pid)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def stop(self) -> None:
        """Stop every game process: SIGTERM, then SIGKILL after the grace period."""
        self._stopping = True
        if self._reloader is not None:
            self._reloader.cancel()
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for pid in list(self._processes):
            await self._kill_later(pid, RETIRE_GRACE)
        for task in list(self._watchers):
            task.cancel()
        if self._watchers:
            await asyncio.wait(self._watchers)

    async def _kill_later(self, pid: int, grace: float) -> None:
        process = self._processes.get(pid)
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            logger.warning("game process %s did not exit in %g s: killing it", pid, grace)
            self.kill(pid)
            await process.wait()

    async def _wait(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._processes.pop(process.pid, None)
        attached = process.pid in self._attached
        self._attached.discard(process.pid)
        if not self._stopping:
            level = logging.INFO if code == 0 else logging.WARNING
            logger.log(level, "game process %s exited with code %s", process.pid, code)
        self._on_exit(process.pid, code, attached)

    def attached(self, pid: int) -> None:
        self._attached.add(pid)

    def _watch(self, task: asyncio.Task[Any]) -> None:
        self._watchers.add(task)
        task.add_done_callback(self._watched)

    def _watched(self, task: asyncio.Task[Any]) -> None:
        self._watchers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("game processes: a task failed", exc_info=task.exception())

    async def _watch_sources(self) -> None:
        import watchfiles  # noqa: PLC0415 (only --reload needs it)

        root = source_root(self.spec)
        if root is None:
            logger.error("--reload: cannot find the source of %s to watch", self.spec)
            return
        logger.info("--reload: watching %s", root)
        async for changes in watchfiles.awatch(
            root, watch_filter=watchfiles.PythonFilter(), debounce=300, step=50
        ):
            changed = sorted({Path(path).name for _, path in changes})
            if self._on_change is not None:
                self._on_change(f"changed: {', '.join(changed)}"[:200])
