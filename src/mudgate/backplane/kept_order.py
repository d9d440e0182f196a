"""Direct deliveries that wait behind this node's kept events, so that a player sees what one
node made in the order the node made it.

A room's or channel's event kept in Redis reaches this node's own players only once it has
come back from Redis (redis_history.py), a round trip later; a message to a player here or a
command's reply would otherwise be written at once, ahead of it, and a game's ``room_event``
then ``send`` would reach the player as the send, then the event. So a direct delivery made
while kept events of this node are on their way waits until each of them has come back or
been given up, and is then made, in the order the deliveries were asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Deliver", "KeptOrder"]

# A delivery to make (a hub's own, to its listeners or to one connection; what it returns is
# ignored); never awaits.
Deliver = Callable[[], object]


class KeptOrder:
    """The deliveries waiting for kept events, in the order they were asked for.

    Kept events are numbered by this node as it publishes them (a sequence, 1, 2, ...); each
    delivery waits for the events numbered up to the last one published before it. Bounded:
    at most ``capacity`` deliveries wait (past it, one is made at once: its order is lost,
    and counted), none for longer than ``timeout_seconds`` (seconds, by ``clock``; a Redis
    that is slow to answer delays a reply by that much at most, then it goes out ahead of
    the events it waited for, counted the same way).
    """

    __slots__ = ("_capacity", "_clock", "_confirmed", "_timeout", "_timer", "_waiting", "unordered")

    def __init__(
        self,
        capacity: int,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._timeout = timeout_seconds
        self._clock = clock
        # Each delivery with the sequence it waits for and when it stops waiting; both only
        # grow along the deque, so the first entry is the next to go either way.
        self._waiting: deque[tuple[int, float, Deliver]] = deque()
        self._confirmed = 0  # every kept event up to this sequence came back or was given up
        self._timer: asyncio.TimerHandle | None = None
        self.unordered = 0  # deliveries made before what they waited for: the cap, the timeout

    def __len__(self) -> int:
        """Deliveries waiting."""
        return len(self._waiting)

    def wait(self, sequence: int, deliver: Deliver) -> None:
        """Make ``deliver`` once every kept event up to ``sequence`` has come back or been
        given up (at once if they have, and nothing waits before it)."""
        waiting = self._waiting
        if sequence <= self._confirmed and not waiting:
            deliver()
        elif len(waiting) >= self._capacity:
            self.unordered += 1
            deliver()
        else:
            waiting.append((sequence, self._clock() + self._timeout, deliver))
            if self._timer is None:
                self._arm()

    def confirmed(self, sequence: int) -> None:
        """Every kept event up to ``sequence`` came back or was given up: make, in order, the
        deliveries waiting for no more than those (and any that waited too long)."""
        self._confirmed = max(self._confirmed, sequence)
        self._release()

    def release_all(self) -> None:
        """Make every waiting delivery now, in order (the backplane closes)."""
        self.confirmed(self._confirmed)  # whoever may go in order goes first
        waiting = self._waiting
        self.unordered += len(waiting)
        while waiting:
            waiting.popleft()[2]()
        self._disarm()

    def _release(self) -> None:
        waiting = self._waiting
        now = self._clock()
        # A delivery made here may ask for another (a slow client closed, a hook that sends):
        # it joins the end of the deque, so the loop takes the deque as it stands each time.
        while waiting:
            sequence, deadline, deliver = waiting[0]
            if sequence > self._confirmed:
                if deadline > now:
                    break
                self.unordered += 1
            waiting.popleft()
            deliver()
        if not waiting:
            self._disarm()

    def _arm(self) -> None:
        """Wake at the first waiting delivery's deadline, should nothing release it before."""
        delay = max(0.0, self._waiting[0][1] - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._release()
        if self._waiting and self._timer is None:
            self._arm()
