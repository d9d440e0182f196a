"""The in-process backplane: one hub, every message delivered by a direct call."""

from __future__ import annotations

from typing import Any

from ..protocol import Outgoing
from .base import BackplaneStats, Delivery, HealthProvider, Node, Presence
from .topic import Topic

__all__ = ["LocalBackplane"]


class LocalBackplane:
    """Delivers a published message at once to the hub that published it.

    The hub already knows which of its players listen to a topic, so there is nothing to
    track here; there are no other nodes, so every cluster question answers None.
    """

    __slots__ = ("_node",)

    node_id = "local"
    clustered = False
    problem = None

    def __init__(self) -> None:
        self._node: Node | None = None

    async def start(self, node: Node, health: HealthProvider) -> None:
        self._node = node

    async def close(self) -> None:
        self._node = None

    def publish(self, topic: Topic, message: Outgoing) -> None:
        if self._node is not None:
            self._node.deliver(topic, message)

    def subscribe(self, topic: Topic) -> None:
        pass

    def unsubscribe(self, topic: Topic) -> None:
        pass

    async def settled(self) -> None:
        pass

    def announce(self, player_id: str, presence: Presence | None) -> None:
        pass

    def evict(self, node_id: str, player_id: str, count: int) -> None:
        pass

    def route(self, player_id: str, message: Outgoing, sender: str | None) -> None:
        pass

    async def send_direct(
        self, player_id: str, message: Outgoing, sender: str | None
    ) -> Delivery | None:
        return None

    async def take_pending(self, player_id: str) -> list[Outgoing]:
        return []

    async def cluster_presence(
        self, player_id: str | None = None
    ) -> dict[str, list[Presence]] | None:
        return None

    async def nodes(self) -> list[dict[str, Any]] | None:
        return None

    def stats(self) -> BackplaneStats | None:
        return None
