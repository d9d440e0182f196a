"""How late the event loop runs, and what was running when something blocked it.

Every player is served by one event loop: a command or hook that computes for a second (a
``roll`` of 99999999d6) freezes every player for that second. ``LoopLag`` wakes every
``INTERVAL_SECONDS`` and records how late it woke: a histogram for ``/metrics``, the latest and
the worst recent lag for ``/monitoring/memory`` and the ``EVENT_LOOP_BLOCKED`` alert. A
watchdog thread sees a block while it lasts (the loop has not checked in for
``loop_lag_threshold``), looks at what the loop's thread is running, and logs it at once, so
the alert names the command: the only way to see inside a block is from outside the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from ..tasks import BackgroundTask

__all__ = ["Block", "LoopLag"]

logger = logging.getLogger("mudgate.lag")

INTERVAL_SECONDS = 0.1
# How long a lag counts as recent (for the alert and /monitoring/memory).
WINDOW_SECONDS = 60.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))

Explain = Callable[[FrameType], str | None]


@dataclass(frozen=True, slots=True)
class Block:
    """A time the loop was blocked: when it began (monotonic), how long it lasted so far or
    in all, and what was running (a command, or the innermost code)."""

    started_at: float
    seconds: float
    running: str


class LoopLag:
    """Measures the event loop's lag; one task in the loop, one watchdog thread beside it.

    ``explain`` turns a frame of the loop's thread into words ("command 'roll' from alice"),
    or None for a frame it does not know; the innermost frame's place is used otherwise.
    """

    def __init__(
        self,
        threshold_seconds: float,
        *,
        explain: Explain | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold_seconds = threshold_seconds
        self._explain = explain
        self.clock = clock
        # Cumulative, as Prometheus has them: each bound counts every lag at or under it.
        self.buckets = dict.fromkeys(BUCKETS, 0)
        self.sum_seconds = 0.0
        self.count = 0
        self.latest_seconds = 0.0
        # The worst lag of each second in the window: bounded by the window's length.
        self._recent: deque[tuple[float, float]] = deque(maxlen=int(WINDOW_SECONDS) + 1)
        self.last_block: Block | None = None
        self._beat = clock()
        self._task = BackgroundTask("mudgate-lag")
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop_thread = threading.get_ident()

    # Lifecycle

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._beat = self.clock()
        self._stopping.clear()
        self._task.start(self._run())
        self._watchdog = threading.Thread(
            target=self._watch, name="mudgate-lag-watchdog", daemon=True
        )
        self._watchdog.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._task.stop()
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.join, 5)
            self._watchdog = None

    # In the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(INTERVAL_SECONDS)
            self.record(max(0.0, loop.time() - asked - INTERVAL_SECONDS))

    def record(self, lag: float) -> None:
        """One measurement: the loop woke ``lag`` seconds later than it asked to."""
        now = self.clock()
        self._beat = now
        self.latest_seconds = lag
        self.count += 1
        self.sum_seconds += lag
        for bound in self.buckets:
            if lag <= bound:
                self.buckets[bound] += 1
        second = float(int(now))
        if self._recent and self._recent[-1][0] == second:
            if lag > self._recent[-1][1]:
                self._recent[-1] = (second, lag)
        else:
            self._recent.append((second, lag))
        block = self.last_block
        if lag >= self.threshold_seconds and block is not None and block.seconds < lag:
            # The watchdog saw it begin; now its whole length is known.
            self.last_block = Block(block.started_at, lag, block.running)

    def recent_max(self) -> float:
        """The worst lag within the last WINDOW_SECONDS."""
        cutoff = self.clock() - WINDOW_SECONDS
        return max((lag for second, lag in self._recent if second >= cutoff), default=0.0)

    def blocked(self) -> Block | None:
        """The last block, if the loop was blocked past the threshold within the window."""
        block = self.last_block
        if block is None or self.recent_max() < self.threshold_seconds:
            return None
        return block

    # In the watchdog thread

    def _watch(self) -> None:
        reported_beat: float | None = None
        while not self._stopping.wait(self.threshold_seconds / 4):
            beat = self._beat
            behind = self.clock() - beat
            if behind < self.threshold_seconds or beat == reported_beat:
                continue
            reported_beat = beat  # one report per block
            running = self._running()
            self.last_block = Block(beat, behind, running)
            logger.warning(
                "the event loop is blocked: every player waits",
                extra={"blocked_seconds": round(behind, 3), "running": running},
            )

    def _running(self) -> str:
        """What the loop's thread is running, from its stack."""
        innermost = frame = sys._current_frames().get(self._loop_thread)
        if innermost is None:
            return "unknown"
        code = innermost.f_code
        place = f"{code.co_filename}:{innermost.f_lineno} in {code.co_name}"
        while frame is not None:
            if self._explain is not None and (described := self._explain(frame)):
                return f"{described}, at {place}"
            frame = frame.f_back
        return place
