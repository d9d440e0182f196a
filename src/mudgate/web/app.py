"""``create_app(settings)``: the gateway, a FastAPI app (``mudgate.server`` runs it).

FastAPI serves every request/response endpoint and the OpenAPI schema; ``/ws`` and
``/events`` are answered by ``RealtimeTransports`` before FastAPI's router sees them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from ..auth import AuthenticateHook, Authenticator
from ..bounded import SlidingWindowLimiter
from ..cleanup import Janitor
from ..commands import CommandRegistry, builtin_commands, running_command
from ..hub import Hub
from ..lag import LoopLag
from ..memory.budget import memory_budget
from ..memory.diagnostics import Diagnostics
from ..memory.monitor import MIB, MemoryMonitor, MemorySample
from ..memory.watch import MemoryWatch
from ..protocol import ErrorCode
from ..settings import Settings
from ..sockets import SocketTable
from .admin import admin_guard
from .cluster import cluster_router
from .diagnostics import diagnostics_router
from .errors import APIError, api_error_handler, validation_error_handler
from .metrics import metrics_registry
from .monitoring import monitoring_router
from .realtime import RealtimeTransports, realtime_router

__all__ = ["MudgateApp", "create_app", "mount"]

logger = logging.getLogger("mudgate")


class GuestToken(BaseModel):
    player: str
    token: str
    expires_in: int


class MudgateApp(FastAPI):
    """FastAPI, with ``/ws`` and ``/events`` answered before its middleware and router.

    Every idle connection would otherwise hold the frames of FastAPI's middleware stack
    (about 1.5 KiB each, measured with bench/idle_memory.py). ``sockets`` is the table of TCP
    connections that mudgate's server (``mudgate.server``) fills and monitoring reads.
    """

    def __init__(
        self, transports: RealtimeTransports, sockets: SocketTable, **options: Any
    ) -> None:
        super().__init__(**options)
        self.transports = transports
        self.sockets = sockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.transports.route(scope)
        if handler is None:
            await super().__call__(scope, receive, send)
        else:
            await handler(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    hub: Hub | None = None,
    commands: CommandRegistry | None = None,
    janitor: Janitor | None = None,
    clock: Callable[[], float] = time.monotonic,
    authenticate: AuthenticateHook | None = None,
) -> MudgateApp:
    """Build the gateway's ASGI app. The hub and the janitor start and stop with its lifespan.

    ``clock`` is what everything that expires measures time with, unless ``hub`` and
    ``janitor`` are given (they carry their own). ``authenticate`` is the game's own sign-in
    (``mudgate.auth``): asked first on ``/ws``, ``/events`` and ``POST /commands``.
    """
    settings = settings or Settings()
    hub = hub or Hub(settings, clock=clock)
    commands = commands or builtin_commands()
    janitor = janitor or Janitor(
        hub,
        MemoryWatch(
            hub,
            MemoryMonitor(settings, clock=hub.clock),
            settings,
            clock=hub.clock,
            lag=LoopLag(settings.loop_lag_threshold, explain=running_command),
        ),
        settings,
        clock=hub.clock,
    )
    watch = janitor.watch
    diagnostics = Diagnostics(settings, clock=hub.clock)
    secret_key_generated = settings.secret_key is None
    secret_key = (
        secrets.token_urlsafe(32)
        if settings.secret_key is None
        else settings.secret_key.get_secret_value()
    )
    admin_token_generated = settings.admin_token is None
    admin_token = (
        secrets.token_urlsafe(24)
        if settings.admin_token is None
        else settings.admin_token.get_secret_value()
    )
    authenticator = Authenticator(
        secret_key,
        settings.token_ttl,
        guest_token_ttl_seconds=settings.guest_token_ttl,
        clock_skew_seconds=settings.token_clock_skew,
        authenticate=authenticate,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if secret_key_generated:
            logger.warning(
                "MUDGATE_SECRET_KEY is not set: using a random key, so player tokens will not "
                "survive a restart"
            )
        if admin_token_generated:
            # Printed once, so the operator can use the admin endpoints of this run.
            logger.warning(
                "MUDGATE_ADMIN_TOKEN is not set; this run's admin token: %s", admin_token
            )
        sample = watch.observe()  # a reading for the node's first lease in a cluster
        await hub.start(health=watch.health)
        _check_budget(settings, sample)
        watch.record(sample)  # the history's first point
        watch.start()
        janitor.start()
        try:
            yield
        finally:
            # Stop cleaning, watching and tracing, then close every connection.
            await janitor.stop()
            await watch.stop()
            diagnostics.stop()
            await hub.close()

    sockets = SocketTable(settings.max_sockets, settings.max_compressed_connections)
    app = MudgateApp(
        RealtimeTransports(hub=hub, commands=commands, authenticator=authenticator),
        sockets,
        title="mudgate",
        summary="Real-time gateway for MUD-style game servers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.hub = hub
    app.state.commands = commands
    app.state.authenticator = authenticator
    app.state.admin_token = admin_token
    admin = admin_guard(
        admin_token,
        SlidingWindowLimiter(
            settings.admin_failures_per_minute, 60.0, settings.max_rate_limit_keys, clock=hub.clock
        ),
    )
    app.state.janitor = janitor
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.state.diagnostics = diagnostics
    app.include_router(
        monitoring_router(janitor, sockets, admin, metrics_registry(janitor, sockets))
    )
    app.include_router(diagnostics_router(diagnostics, admin))
    app.include_router(cluster_router(hub, watch.health))
    app.include_router(realtime_router(hub, commands, authenticator))

    app.include_router(guest_router(settings, hub, authenticator))
    return app


def _check_budget(settings: Settings, sample: MemorySample) -> None:
    """Warn at start when the worst case the caps allow does not fit under the limit."""
    budget = memory_budget(settings, sample.limit_bytes, sample.used_bytes)
    if not budget.fits:
        largest = budget.largest()
        logger.warning(
            "the configured caps allow %.0f MiB in the worst case, over the %.0f MiB limit (%s); "
            "%s alone allows %.0f MiB: lower its caps",
            budget.total_bytes / MIB,
            budget.limit_bytes / MIB,
            sample.limit_source,
            largest.structure,
            largest.worst_case_bytes / MIB,
        )


def guest_router(settings: Settings, hub: Hub, authenticator: Authenticator) -> APIRouter:
    """``POST /auth/guest``: a token for a fresh guest player, rate-limited per IP."""
    router = APIRouter()
    guest_limiter = SlidingWindowLimiter(
        settings.guest_tokens_per_minute, 60.0, settings.max_rate_limit_keys, clock=hub.clock
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
        remote = request.client.host if request.client else "unknown"
        if not guest_limiter.hit(remote):
            raise APIError(
                429, ErrorCode.RATE_LIMITED, "too many guest tokens", {"Retry-After": "60"}
            )
        player_id, token = authenticator.issue_guest()
        return GuestToken(player=player_id, token=token, expires_in=int(settings.guest_token_ttl))

    return router


def mount(
    parent: FastAPI, path: str = "/mud", settings: Settings | None = None, **options: Any
) -> MudgateApp:
    """Mount a gateway into an existing FastAPI app under ``path``, its lifespan composed with
    the parent's (Starlette does not run a mounted app's lifespan by itself).

    ``options`` go to ``create_app`` (``hub``, ``commands``, ...). Returns the gateway app, whose
    ``state.hub`` is what game code talks to.
    """
    gateway = create_app(settings, **options)
    parent.mount(path, gateway)
    parent_lifespan = parent.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        # The gateway starts first and stops last, so the parent's code can use the hub.
        async with gateway.router.lifespan_context(gateway), parent_lifespan(app) as state:
            yield state

    parent.router.lifespan_context = lifespan
    return gateway
