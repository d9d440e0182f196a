"""The in-process backplane: one hub, which delivers its own messages; nothing leaves."""

from __future__ import annotations

from typing import Any

from ..protocol import Outgoing
from .base import BackplaneStats, Delivery, HealthProvider, Node, Presence
from .history import Recovery
from .kept_order import Deliver
from .topic import Topic

__all__ = ["LocalBackplane"]


class LocalBackplane:
    """No other node: nothing to publish to, subscribe to or ask (every cluster question
    answers None). The hub has delivered to its own listeners already."""

    __slots__ = ()

    node_id = "local"
    clustered = False
    problem = None
    keeps_history = False  # the hub keeps its own

    async def start(self, node: Node, health: HealthProvider) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, topic: Topic, message: Outgoing) -> None:
        pass

    def publish_kept(self, topic: Topic, message: Outgoing) -> None:
        raise RuntimeError("the in-process backplane keeps no history: the hub does")

    def after_kept(self, deliver: Deliver) -> None:
        deliver()  # nothing is kept elsewhere: nothing to wait for

    async def recover(self, topic: Topic, offset: int, epoch: str) -> Recovery | None:
        return None

    def subscribe(self, topic: Topic) -> None:
        pass

    def unsubscribe(self, topic: Topic) -> None:
        pass

    async def settled(self) -> None:
        pass

    def announce(self, player_id: str, presence: Presence | None, left_room: str = "") -> None:
        pass

    async def last_room(self, player_id: str) -> str | None:
        return None

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

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        return True  # one node is the whole cluster

    def stats(self) -> BackplaneStats | None:
        return None
