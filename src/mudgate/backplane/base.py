"""The Backplane protocol: the one way a hub's fan-out leaves the process.

A hub publishes every room, channel and direct message to a topic (``room:NAME``,
``channel:NAME``, ``player:ID``) and subscribes to a topic only while it has a local listener
for it. The backplane hands each published message to the ``Deliver`` callback of every hub
subscribed to its topic: the in-process one does so at once, the Redis one across nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..protocol import Outgoing

__all__ = ["Backplane", "Deliver"]

Deliver = Callable[[str, Outgoing], None]


class Backplane(Protocol):
    """Publish/subscribe between hubs. ``publish`` never waits: fan-out must not block."""

    async def start(self, deliver: Deliver) -> None:
        """Start delivering messages for subscribed topics to ``deliver``."""

    async def close(self) -> None:
        """Stop delivering and release every resource."""

    def publish(self, topic: str, message: Outgoing) -> None:
        """Send ``message`` to every hub subscribed to ``topic``, this one included."""

    def subscribe(self, topic: str) -> None:
        """Receive messages published to ``topic``."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving messages published to ``topic``."""

    def stats(self) -> dict[str, int]:
        """The sizes of the backplane's own structures, for monitoring."""
