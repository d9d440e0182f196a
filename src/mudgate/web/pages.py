"""The pages a player opens: ``GET /play`` and the browser client module ``GET /mudgate.js``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

__all__ = ["pages_router"]

PLAY_PAGE = Path(__file__).parent / "static" / "play.html"
CLIENT_MODULE = Path(__file__).parent / "static" / "mudgate.js"


def pages_router() -> APIRouter:
    router = APIRouter()

    @router.get("/play", response_class=HTMLResponse, tags=["play"])
    async def play() -> HTMLResponse:
        """The play page: a guest (or ``?token=``) in the game over WebSocket, falling back to
        SSE and ``POST /commands``; reconnects as the close code says."""
        return HTMLResponse(PLAY_PAGE.read_text(encoding="utf-8"))

    @router.get("/mudgate.js", response_class=Response, tags=["play"])
    async def client_module() -> Response:
        """The browser client as an ES module (``import { MudgateClient } from
        "<gateway>/mudgate.js"``): reconnects by close code, renews refused tokens, falls back
        to SSE. /play is built on it."""
        return Response(
            CLIENT_MODULE.read_bytes(),
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    return router
