"""``/monitoring/game``: the game behind the gateway, as an operator needs to see it, and the
admin's reload (what SIGHUP does)."""

# No `from __future__ import annotations`: FastAPI resolves the routes' dependencies at runtime.
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from ..game import GameLink
from ..protocol import ErrorCode
from .errors import APIError

__all__ = ["game_router"]


def game_router(link: GameLink | None, in_process: bool, admin: Callable[..., Any]) -> APIRouter:
    router = APIRouter()

    @router.get("/monitoring/game", tags=["monitoring"])
    async def game() -> dict[str, Any]:
        """Where the game runs and how it is: ``in_process`` (in the gateway's process),
        ``none`` (built-in commands only), or the linked game's state (``ready``,
        ``restarting``, ``down``), its pid, what waits for it and its restarts."""
        if link is None:
            return {"state": "in_process" if in_process else "none"}
        return link.status()

    @router.post("/admin/game/reload", tags=["admin"], dependencies=[Depends(admin)])
    async def reload() -> dict[str, str]:
        """Start a fresh game process and retire the running one once it is ready (SIGHUP)."""
        if link is None or link.processes is None:
            raise APIError(
                409,
                ErrorCode.UNAVAILABLE,
                "this gateway does not start its game: run it with --game MODULE:ATTR",
            )
        link.reload("admin")
        return {"status": "reloading"}

    return router
