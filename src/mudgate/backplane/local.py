"""The in-process backplane: one hub, every message delivered by a direct call."""

from __future__ import annotations

from ..protocol import Outgoing
from .base import Deliver

__all__ = ["LocalBackplane"]


class LocalBackplane:
    """Delivers a published message at once to the hub that published it.

    The hub already knows which of its players listen to a topic, so there is nothing to
    track here; subscribe and unsubscribe are no-ops.
    """

    __slots__ = ("_deliver",)

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    def publish(self, topic: str, message: Outgoing) -> None:
        if self._deliver is not None:
            self._deliver(topic, message)

    def subscribe(self, topic: str) -> None:
        pass

    def unsubscribe(self, topic: str) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}
