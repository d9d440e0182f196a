"""``GET /monitoring/cluster``: every live node, as each last described itself in Redis."""

# No `from __future__ import annotations`: FastAPI resolves the routes' dependencies at runtime.
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..backplane import Backplane, HealthProvider
from ..hub import Hub
from ..settings import Settings

__all__ = ["cluster_router"]


class NodeMemory(BaseModel):
    rss_mb: float
    percent: float
    limit_mb: float


class ClusterNode(BaseModel):
    node: str = Field(description="The node's id: its name, process id and a random suffix.")
    name: str = Field(description="MUDGATE_NODE_NAME of the node.")
    updated_at: float | None = Field(
        None, description="When the node last renewed its lease, Unix seconds."
    )
    connections: int
    players: int
    memory: NodeMemory | None = None
    alerts: list[str] = Field(default_factory=list)
    shedding: bool = False


class ClusterReport(BaseModel):
    backplane: str = Field(description="`local` (this process alone) or `redis`.")
    node: str = Field(description="The id of the node that answered.")
    reachable: bool = Field(description="Whether the other nodes can be reached now.")
    problem: str | None = Field(
        description="Why not, while they cannot (or what of the cluster fails, while it does)."
    )
    nodes: list[ClusterNode] = Field(
        description="Every live node; only this one without a reachable backplane."
    )


def cluster_router(
    settings: Settings, hub: Hub, backplane: Backplane, health: HealthProvider
) -> APIRouter:
    """``health`` is what the node's lease carries besides its counts (the health watch's)."""
    router = APIRouter()

    @router.get("/monitoring/cluster", response_model=ClusterReport, tags=["monitoring"])
    async def cluster() -> ClusterReport:
        """The live nodes with their memory, connection counts and alerts. Each node renews a
        summary with its presence lease (every ``MUDGATE_PRESENCE_REFRESH``); a node that died
        is gone within ``MUDGATE_PRESENCE_TTL``."""
        nodes: list[dict[str, Any]] | None = await backplane.nodes()
        if nodes is None:  # no cluster to ask: this node alone, described now
            nodes = [{"node": backplane.node_id, **hub.status(), **health()}]
        return ClusterReport(
            backplane="local" if settings.backplane is None else "redis",
            node=backplane.node_id,
            reachable=backplane.clustered,
            problem=backplane.problem,
            nodes=[ClusterNode.model_validate(node) for node in nodes],
        )

    return router
