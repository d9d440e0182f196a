"""What a node writes to Redis without waiting: one bounded queue, drained by one writer task.

While Redis is away nothing is queued: what was meant for the other nodes is dropped and
counted (they will hear of this node's players afresh when it returns). Past
``backplane_queue_size`` commands or ``backplane_queue_bytes`` of their arguments (a game's
events have no size cap of their own) the oldest are dropped and counted. Whoever queued a
command that must not vanish unseen (a room's event that this node's players get only back
from Redis) is shown each one dropped (``Dropped``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

__all__ = ["Command", "Dropped", "Replied", "WriteQueue"]

logger = logging.getLogger("mudgate.backplane")

Command = tuple[Any, ...]
# Shown each command with what Redis answered (an exception when it refused); whether it took
# care of the answer (a refusal it took is neither counted nor logged here).
Replied = Callable[[Command, object], bool]
# Shown each command dropped unwritten (past a cap, or queued when Redis went away).
Dropped = Callable[[Command], None]

# Commands written to Redis in one round trip.
WRITE_BATCH = 512


def command_bytes(command: Command) -> int:
    """The bytes a queued command holds in its arguments (names, channels, payloads)."""
    return sum(len(arg) for arg in command if isinstance(arg, bytes | str))


class WriteQueue:
    __slots__ = (
        "_bytes",
        "_capacity",
        "_capacity_bytes",
        "_commands",
        "_dropped",
        "_replied",
        "_sending",
        "_serial",
        "dropped",
        "errors",
        "open",
        "wake",
    )

    def __init__(
        self,
        capacity: int,
        capacity_bytes: int,
        replied: Replied | None = None,
        dropped: Dropped | None = None,
    ) -> None:
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._replied = replied
        self._dropped = dropped
        self._commands: deque[Command] = deque()
        self._bytes = 0  # of the queued commands' arguments
        self._sending = 0  # of the batch being written
        self._serial = 0  # commands ever queued: the newest's number
        self.open = False  # Redis can be reached: commands are queued
        self.wake = asyncio.Event()  # set when the writer has something to do
        self.dropped = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def bytes(self) -> int:
        """What waits and what is being written, in bytes of the commands' arguments."""
        return self._bytes + self._sending

    def put(self, command: Command) -> None:
        if not self.open:
            self.dropped += 1  # Redis is away: what was meant for other nodes is lost
            if self._dropped is not None:
                self._dropped(command)
            return
        self._commands.append(command)
        self._serial += 1
        self._bytes += command_bytes(command)
        while len(self._commands) > self._capacity or (
            self._bytes + self._sending > self._capacity_bytes and len(self._commands) > 1
        ):
            oldest = self._commands.popleft()
            self._bytes -= command_bytes(oldest)
            self.dropped += 1
            if self._dropped is not None:
                self._dropped(oldest)
        self.wake.set()

    def close(self) -> None:
        """Redis went away: nothing queued outlives the connection it was meant for."""
        self.open = False
        self.dropped += len(self._commands)
        commands, self._commands = self._commands, deque()
        self._bytes = 0
        if self._dropped is not None:
            for command in commands:
                self._dropped(command)

    def take_all(self) -> list[Command]:
        """Everything queued (a node closing writes it in one last round trip)."""
        commands = list(self._commands)
        self._commands.clear()
        self._bytes = 0
        return commands

    def mark(self) -> int:
        """Where the queue stands now, for ``write(until=)``."""
        return self._serial

    def _queued_until(self, mark: int | None) -> int:
        """How many queued commands were queued by ``mark`` (only the oldest are ever
        dropped, so those queued since are the newest ``serial - mark``)."""
        if mark is None:
            return len(self._commands)
        return max(0, len(self._commands) - (self._serial - mark))

    async def write(self, redis: Redis, until: int | None = None) -> None:
        """Write what is queued (or only what was queued by ``until``, a ``mark``),
        WRITE_BATCH commands a round trip; a command Redis refuses is counted and logged
        (unless ``replied`` took care of it), and the others still run."""
        while count := min(WRITE_BATCH, self._queued_until(until)):
            batch = [self._commands.popleft() for _ in range(count)]
            # On its way, a batch still counts against the cap: what waits and what is being
            # written are capped together.
            self._sending = sum(command_bytes(command) for command in batch)
            self._bytes -= self._sending
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for command in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
            finally:
                self._sending = 0
            for command, result in zip(batch, results, strict=True):
                if self._replied is not None and self._replied(command, result):
                    continue
                if isinstance(result, Exception):
                    self.errors += 1
                    logger.warning("Redis refused a write: %s", result)
