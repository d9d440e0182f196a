"""The topics a node listens to in Redis, and who waits for them to be in force.

The topics mirror the hub's listeners (Topics subscribes a topic with its first local listener
and unsubscribes it with its last), so they are bounded by them. Changes are applied by the
backplane's writer on the subscriber connection; a settle waits for a PING sent after them,
whose PONG comes back once Redis has applied everything before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from redis.asyncio.client import PubSub

from .topic import Topic

__all__ = ["Subscriptions"]

# PINGs on the subscriber connection still waiting for their PONG; past it the connection is
# taken for dead (and every waiter released), so the list of waiters cannot grow.
MAX_UNANSWERED_PINGS = 100


class Subscriptions:
    def __init__(self, channel: Callable[[Topic], str]) -> None:
        self._channel = channel
        self.topics: set[Topic] = set()
        # What changed since the subscriber connection last caught up (only while one is
        # live: a new one subscribes to every topic at once, so nothing accumulates meanwhile).
        self._changes: dict[Topic, bool] = {}
        self._live = False
        # Who waits for the subscriptions asked for so far, and the PINGs sent for them.
        self._barriers: list[asyncio.Future[None]] = []
        self._pings: deque[list[asyncio.Future[None]]] = deque()

    def __len__(self) -> int:
        return len(self.topics)

    def listen(self, topic: Topic, listening: bool) -> None:
        if listening:
            self.topics.add(topic)
        else:
            self.topics.discard(topic)
        if self._live:
            self._changes[topic] = listening

    def subscribing(self) -> bool:
        """Whether a topic waits to be subscribed to at the next catch-up."""
        return any(self._changes.values())

    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once every subscription asked for so far is in force."""
        barrier = asyncio.get_running_loop().create_future()
        self._barriers.append(barrier)
        return barrier

    async def subscribe_all(self, pubsub: PubSub, *channels: str) -> None:
        """A new subscriber connection: every topic (and ``channels``) in one command."""
        self._changes.clear()
        self._live = True
        await pubsub.subscribe(*channels, *(self._channel(topic) for topic in self.topics))

    async def catch_up(self, pubsub: PubSub) -> None:
        """Apply what changed, and PING for whoever waits (the writer's turn)."""
        if self._changes:
            changes, self._changes = self._changes, {}
            add = [self._channel(topic) for topic, on in changes.items() if on]
            remove = [self._channel(topic) for topic, on in changes.items() if not on]
            if add:
                await pubsub.subscribe(*add)
            if remove:
                await pubsub.unsubscribe(*remove)
        if self._barriers:
            if len(self._pings) >= MAX_UNANSWERED_PINGS:
                # Alive enough to take commands, deaf to pub/sub: start over.
                raise ConnectionError("the subscriber connection stopped answering PINGs")
            # Redis answers in order: once this PING's PONG is back, so are the above.
            self._pings.append(self._barriers)
            self._barriers = []
            await pubsub.ping()

    def pong(self) -> None:
        """The subscriber connection's PONG: the oldest PING's waiters are settled."""
        if self._pings:
            _resolve(self._pings.popleft())

    def lost(self) -> None:
        """The subscriber connection is gone: nothing to catch up, nobody left waiting."""
        self._live = False
        self._changes.clear()
        _resolve(self._barriers)
        self._barriers = []
        while self._pings:
            _resolve(self._pings.popleft())


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
