"""Admin-only heavy diagnostics: tracemalloc sessions, growth by allocation site, object counts."""

# No `from __future__ import annotations`: FastAPI resolves the routes' dependencies at runtime.
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ..memory.diagnostics import Diagnostics, DiagnosticsError
from ..protocol import ErrorCode
from .admin import logger
from .errors import APIError

__all__ = ["diagnostics_router"]


class TracingState(BaseModel):
    tracing: bool
    stops_in_seconds: float | None = Field(description="When the session stops by itself.")


class AllocationSiteModel(BaseModel):
    location: str = Field(description="file:line")
    size_diff_bytes: int = Field(description="Growth since the baseline.")
    count_diff: int
    size_bytes: int
    count: int


class TopReport(BaseModel):
    sites: list[AllocationSiteModel]


class ObjectCount(BaseModel):
    type: str
    count: int


class ObjectsReport(BaseModel):
    objects: list[ObjectCount]


def diagnostics_router(diagnostics: Diagnostics, admin: Callable[..., str]) -> APIRouter:
    router = APIRouter(tags=["diagnostics"], responses={401: {}, 403: {}, 409: {}, 429: {}})
    max_seconds = diagnostics.settings.tracemalloc_max_seconds

    @router.post("/monitoring/memory/tracemalloc/start", response_model=TracingState)
    async def start(
        remote: Annotated[str, Depends(admin)],
        frames: Annotated[int, Query(ge=1, le=25, description="Frames kept per trace.")] = 1,
    ) -> TracingState:
        """Start tracemalloc (about 3x CPU and 1.5x memory while on) and take the baseline."""
        try:
            diagnostics.start(frames)
        except DiagnosticsError as error:
            logger.warning("admin tracemalloc start from %s refused: %s", remote, error)
            raise APIError(409, ErrorCode.UNAVAILABLE, str(error)) from None
        logger.warning("admin tracemalloc started by %s for at most %.0f s", remote, max_seconds)
        return TracingState(tracing=True, stops_in_seconds=max_seconds)

    @router.post("/monitoring/memory/tracemalloc/stop", response_model=TracingState)
    async def stop(remote: Annotated[str, Depends(admin)]) -> TracingState:
        """Stop tracemalloc and drop the baseline."""
        stopped = diagnostics.stop()
        logger.warning(
            "admin tracemalloc stop by %s: %s", remote, "stopped" if stopped else "was off"
        )
        return TracingState(tracing=False, stops_in_seconds=None)

    @router.get("/monitoring/memory/top", response_model=TopReport)
    async def top(
        remote: Annotated[str, Depends(admin)],
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> TopReport:
        """The allocation sites that grew most since tracemalloc started."""
        try:
            sites = diagnostics.top(limit)
        except DiagnosticsError as error:
            raise APIError(409, ErrorCode.UNAVAILABLE, str(error)) from None
        logger.info("admin memory top by %s: %d sites", remote, len(sites))
        return TopReport(
            sites=[
                AllocationSiteModel(
                    location=site.location,
                    size_diff_bytes=site.size_diff_bytes,
                    count_diff=site.count_diff,
                    size_bytes=site.size_bytes,
                    count=site.count,
                )
                for site in sites
            ]
        )

    @router.get("/monitoring/memory/objects", response_model=ObjectsReport)
    async def objects(
        remote: Annotated[str, Depends(admin)],
        limit: Annotated[int, Query(ge=1, le=200)] = 30,
    ) -> ObjectsReport:
        """Live objects by type (walks the whole heap: at most once per 10 s)."""
        try:
            counts = diagnostics.object_counts(limit)
        except DiagnosticsError as error:
            raise APIError(429, ErrorCode.RATE_LIMITED, str(error)) from None
        logger.info("admin object counts by %s", remote)
        return ObjectsReport(objects=[ObjectCount(type=name, count=n) for name, n in counts])

    return router
