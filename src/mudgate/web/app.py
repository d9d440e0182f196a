"""The gateway's web app: FastAPI, with ``/ws`` and ``/events`` answered before it.

FastAPI serves every request/response endpoint and the OpenAPI schema; ``/ws`` and
``/events`` are answered by ``RealtimeEndpoints`` before FastAPI's router sees them. The
composition root (``mudgate.gateway``) builds the parts and calls ``web_app`` with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from ..auth import Authenticator
from ..backplane import Backplane
from ..bounded import SlidingWindowLimiter
from ..cleanup import Janitor
from ..command_stats import CommandStats
from ..commands import CommandRegistry
from ..game import GameLink
from ..health.alerts import AlertTracker
from ..health.lag import LoopLag
from ..health.levels import MemoryLevels
from ..health.notify import Notifier
from ..health.watch import HealthWatch
from ..hub import Hub
from ..memory.diagnostics import Diagnostics
from ..memory.history import MemoryHistory
from ..memory.monitor import MemoryMonitor
from ..protocol import ErrorCode
from ..render import Renderers
from ..server.sockets import SocketTable
from ..server.telnet import TelnetListener
from ..settings import Settings
from .admin import admin_guard
from .clients import remote_address
from .cluster import cluster_router
from .commands import commands_router
from .diagnostics import diagnostics_router
from .errors import APIError, api_error_handler, validation_error_handler
from .game import game_router
from .metrics import GatewayCollector, metrics_registry
from .monitoring import monitoring_router
from .pages import pages_router
from .realtime import RealtimeEndpoints

# What starts and stops the gateway's parts with the app (FastAPI's ``lifespan``).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

__all__ = ["Lifespan", "MudgateApp", "web_app"]

logger = logging.getLogger("mudgate")


class GuestToken(BaseModel):
    player: str
    token: str
    expires_in: int


class MudgateApp(FastAPI):
    """FastAPI, with ``/ws`` and ``/events`` answered before its middleware and router.

    Every idle connection would otherwise hold the frames of FastAPI's middleware stack
    (about 1.5 KiB each, measured with bench/idle_memory.py).
    """

    def __init__(self, endpoints: RealtimeEndpoints, **options: Any) -> None:
        super().__init__(**options)
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.endpoints.route(scope)
        if handler is None:
            await super().__call__(scope, receive, send)
        else:
            await handler(scope, receive, send)


def web_app(
    *,
    settings: Settings,
    clock: Callable[[], float],
    hub: Hub,
    backplane: Backplane,
    sockets: SocketTable,
    monitor: MemoryMonitor,
    watch: HealthWatch,
    levels: MemoryLevels,
    history: MemoryHistory,
    tracker: AlertTracker,
    notifier: Notifier,
    lag: LoopLag,
    janitor: Janitor,
    diagnostics: Diagnostics,
    commands: CommandRegistry,
    command_stats: CommandStats,
    authenticator: Authenticator,
    renderers: Renderers,
    admin_token: str,
    lifespan: Lifespan,
    game_link: GameLink | None = None,
    game_in_process: bool = False,
    telnet: TelnetListener | None = None,
) -> MudgateApp:
    """The gateway's web face, from the parts the composition root built
    (``mudgate.gateway.create_app``): the real-time endpoints, monitoring, admin, the guest
    door and the pages. ``lifespan`` starts and stops the parts."""
    app = MudgateApp(
        RealtimeEndpoints(
            settings=settings,
            clock=clock,
            hub=hub,
            commands=commands,
            authenticator=authenticator,
            renderers=renderers,
        ),
        title="mudgate",
        summary="Real-time gateway for MUD-style game servers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    admin = admin_guard(
        admin_token,
        SlidingWindowLimiter(
            settings.admin_failures_per_minute, 60.0, settings.max_rate_limit_keys, clock=clock
        ),
    )
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(
        monitoring_router(
            settings=settings,
            clock=clock,
            hub=hub,
            monitor=monitor,
            watch=watch,
            levels=levels,
            history=history,
            lag=lag,
            janitor=janitor,
            sockets=sockets,
            command_stats=command_stats,
            admin=admin,
            telnet=telnet,
            registry=metrics_registry(
                GatewayCollector(
                    hub=hub,
                    monitor=monitor,
                    levels=levels,
                    tracker=tracker,
                    notifier=notifier,
                    lag=lag,
                    janitor=janitor,
                    sockets=sockets,
                    command_stats=command_stats,
                    game_link=game_link,
                    telnet=telnet,
                )
            ),
        )
    )
    app.include_router(diagnostics_router(diagnostics, admin))
    app.include_router(game_router(game_link, game_in_process, admin))
    app.include_router(cluster_router(settings, hub, backplane, watch.health))
    app.include_router(commands_router(settings, hub, commands, authenticator))
    app.include_router(pages_router())
    app.include_router(guest_router(settings, clock, hub, authenticator))
    return app


def guest_router(
    settings: Settings, clock: Callable[[], float], hub: Hub, authenticator: Authenticator
) -> APIRouter:
    """``POST /auth/guest``: a token for a fresh guest player, rate-limited per IP."""
    router = APIRouter()
    guest_limiter = SlidingWindowLimiter(
        settings.guest_tokens_per_minute, 60.0, settings.max_rate_limit_keys, clock=clock
    )

    @router.post(
        "/auth/guest", response_model=GuestToken, tags=["auth"], responses={403: {}, 429: {}}
    )
    async def guest_token(request: Request) -> GuestToken:
        """A token for a fresh guest player, when ``allow_guests`` is on. Rate-limited per IP."""
        if not settings.allow_guests:
            raise APIError(403, ErrorCode.FORBIDDEN, "guests are not allowed on this server")
        if hub.shedding:
            raise APIError(
                503,
                ErrorCode.UNAVAILABLE,
                "memory pressure: try again later",
                {"Retry-After": "30"},
            )
        guest_limiter.expire(limit=100)
        remote = remote_address(request.scope)
        if not guest_limiter.hit(remote):
            raise APIError(
                429, ErrorCode.RATE_LIMITED, "too many guest tokens", {"Retry-After": "60"}
            )
        player_id, token = authenticator.issue_guest()
        return GuestToken(player=player_id, token=token, expires_in=int(settings.guest_token_ttl))

    return router
