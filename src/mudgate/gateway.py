"""The composition root: ``Gateway`` builds every part of a gateway and hands each what it needs.

Nothing else wires parts together. The hub, the socket table, the memory monitor, the janitor,
the health watch, the command registry (and its stats) and the authenticator are built here,
once, from the settings; ``create_app(gateway)`` builds the web app from them and
``mudgate.server.serve(app, gateway)`` serves it, filling the gateway's socket table and calling
its ``drain`` at shutdown.

    gateway = Gateway(settings, commands=my_commands)
    serve(create_app(gateway), gateway)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .auth import AuthenticateHook, Authenticator
from .backplane import Backplane, create_backplane
from .cleanup import Janitor
from .command_stats import CommandStats
from .commands import CommandRegistry, builtin_commands, running_command
from .game import Game, GameLink
from .health.alerts import AlertTracker
from .health.lag import LoopLag
from .health.levels import MemoryLevels
from .health.notify import Notifier
from .health.watch import HealthWatch
from .hub import Hub
from .memory.budget import memory_budget
from .memory.diagnostics import Diagnostics
from .memory.history import MemoryHistory
from .memory.monitor import MIB, MemoryMonitor, MemorySample
from .protocol import CloseCode, restart_reason
from .render import Renderers
from .server.sockets import SocketTable
from .server.telnet import TelnetListener, TelnetService
from .settings import Settings
from .web.app import MudgateApp, web_app

__all__ = ["Gateway", "create_app", "mount", "standalone"]

logger = logging.getLogger("mudgate")


class Gateway:
    """Every part of one gateway, built from ``settings`` and wired here.

    ``game`` is a game to run in this process (its commands, hooks and timers; ``mudgate.Game``),
    or ``commands`` a command registry alone (default: the built-in commands only). With the
    ``game`` or ``game_link`` setting instead, the game runs in a process of its own, linked to
    this gateway (``GameLink``; docs/game-link.md).
    ``renderers`` how events look to telnet players and to MUD clients on ``/ws``
    (``mudgate.render``; a game brings its own, and ``MUDGATE_TELNET_RENDERERS`` names them
    for a game in a process of its own).
    ``authenticate`` the game's own sign-in (``mudgate.auth``), asked first on ``/ws``,
    ``/events`` and ``POST /commands``. ``clock`` is what everything that expires measures
    time with (``time.monotonic``); ``backplane`` (default: what ``MUDGATE_BACKPLANE`` names)
    and ``notifier`` are seams for tests.

    ``command_stats`` counts and times every command ``commands`` dispatches, for ``/metrics``
    and ``/monitoring/commands``; what answers commands elsewhere records into it (``observe``).

    ``start`` starts the backplane and the health watch's tick; ``drain(code, timeout)``
    closes every player's connection with ``code`` and waits for them to leave; ``stop``
    stops the tick, then closes what is left and the backplane.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        commands: CommandRegistry | None = None,
        game: Game | None = None,
        renderers: Renderers | None = None,
        authenticate: AuthenticateHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        backplane: Backplane | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        settings = self.settings = settings or Settings()
        self.clock = clock
        self.backplane = create_backplane(settings) if backplane is None else backplane
        self.hub = Hub(settings, backplane=self.backplane, clock=clock, wall_clock=wall_clock)
        self.sockets = SocketTable(settings.max_sockets, settings.max_compressed_connections)
        self.monitor = MemoryMonitor(settings, clock=clock)
        self.janitor = Janitor(self.hub, self.monitor, settings, clock=clock, wall_clock=wall_clock)
        # What the health watch advances on its tick, and monitoring reads.
        self.levels = MemoryLevels(settings, clock=clock)
        self.history = MemoryHistory(settings, clock=clock)
        self.tracker = AlertTracker()
        self.notifier = (
            Notifier(settings, clock=clock, wall_clock=wall_clock) if notifier is None else notifier
        )
        self.lag = LoopLag(settings.loop_lag_threshold, explain=running_command)
        self.watch = HealthWatch(
            self.hub,
            self.monitor,
            self.janitor,
            settings,
            clock=clock,
            wall_clock=wall_clock,
            levels=self.levels,
            history=self.history,
            tracker=self.tracker,
            notifier=self.notifier,
            lag=self.lag,
            game_problems=self._game_problems,
        )
        self.diagnostics = Diagnostics(settings, clock=clock)
        if game is not None and commands is not None:
            raise ValueError("give the game (its commands come with it) or commands, not both")
        if game is not None and (settings.game is not None or settings.game_link is not None):
            raise ValueError(
                "the game runs in this process (game=) or in its own (MUDGATE_GAME, "
                "MUDGATE_GAME_LINK), not both"
            )
        self.game = game
        if game is not None:
            commands = game.commands
            self.hub.hooks = game.hooks
        self.commands = builtin_commands() if commands is None else commands
        # Counted per op the registry knows; read by /metrics and /monitoring/commands.
        self.command_stats = CommandStats(self.commands)
        self.commands.stats = self.command_stats
        self.game_link: GameLink | None = None
        if settings.game is not None or settings.game_link is not None:
            self.game_link = GameLink(self.hub, self.commands, settings, clock=clock)
            self.commands.forwarder = self.game_link
        self._secret_key_generated = settings.secret_key is None
        self._admin_token_generated = settings.admin_token is None
        self.admin_token = (
            secrets.token_urlsafe(24)
            if settings.admin_token is None
            else settings.admin_token.get_secret_value()
        )
        self.authenticator = Authenticator(
            secrets.token_urlsafe(32)
            if settings.secret_key is None
            else settings.secret_key.get_secret_value(),
            settings.token_ttl,
            guest_token_ttl_seconds=settings.guest_token_ttl,
            clock_skew_seconds=settings.token_clock_skew,
            authenticate=authenticate,
        )
        # How events look to telnet players and to MUD clients on /ws (their subprotocols).
        self.renderers = _renderers(settings, game, renderers)
        self.telnet: TelnetListener | None = None
        if settings.telnet_port is not None:
            self.telnet = TelnetListener(
                TelnetService(
                    settings=settings,
                    hub=self.hub,
                    commands=self.commands,
                    authenticator=self.authenticator,
                    sockets=self.sockets,
                    renderers=self.renderers,
                    clock=clock,
                    wall_clock=wall_clock,
                ),
                settings,
            )

    async def start(self) -> None:
        """Start the backplane and the health watch's tick."""
        if self._secret_key_generated:
            logger.warning(
                "MUDGATE_SECRET_KEY is not set: using a random key, so player tokens will not "
                "survive a restart"
            )
        if self._admin_token_generated:
            # Printed once, so the operator can use the admin endpoints of this run.
            logger.warning(
                "MUDGATE_ADMIN_TOKEN is not set; this run's admin token: %s", self.admin_token
            )
        sample = self.watch.observe()  # a reading for the node's first lease in a cluster
        await self.hub.start(health=self.watch.health)
        _check_budget(self.settings, sample)
        self.watch.record(sample)  # the history's first point
        self.watch.start()
        if self.game is not None:
            await self.game.start(self.hub)
            self.game.start_timers()
        if self.telnet is not None:
            await self.telnet.start(reuse_port=self.settings.workers > 1)
        if self.game_link is not None:
            await self.game_link.start()
            # SIGHUP restarts the game (with --game); for a game that attaches by itself, it
            # is logged rather than ending the gateway and every player with it.
            self._reload_on_sighup(True)

    def _game_problems(self) -> tuple[str | None, str | None]:
        link = self.game_link
        return (None, None) if link is None else link.alerts()

    def reload_game(self) -> None:
        """Start a fresh game process and retire the old one once it is ready (SIGHUP)."""
        if self.game_link is not None:
            self.game_link.reload("SIGHUP")

    def _reload_on_sighup(self, on: bool) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop = asyncio.get_running_loop()
            if on:
                loop.add_signal_handler(signal.SIGHUP, self.reload_game)
            else:
                loop.remove_signal_handler(signal.SIGHUP)

    async def drain(
        self, code: CloseCode = CloseCode.SERVICE_RESTART, timeout_seconds: float | None = None
    ) -> None:
        """Refuse new players, close every connection with ``code``, in batches spread over
        most of ``timeout_seconds`` (by default ``MUDGATE_SHUTDOWN_TIMEOUT``), and wait (at
        most that) until each has left. A 1012 names ``MUDGATE_RECONNECT_WINDOW`` in its
        reason."""
        timeout = self.settings.shutdown_timeout if timeout_seconds is None else timeout_seconds
        if self.telnet is not None:
            self.telnet.stop_accepting()
        reason = None
        if code is CloseCode.SERVICE_RESTART:
            reason = restart_reason(self.settings.reconnect_window)
        await self.hub.close_connections(code, timeout, reason=reason, in_batches=True)

    async def stop(self) -> None:
        """Stop watching, cleaning and tracing, then close every connection and the backplane."""
        await self.watch.stop()
        self.diagnostics.stop()
        if self.game_link is not None:
            self._reload_on_sighup(False)
            await self.game_link.stop()
        if self.game is not None:
            await self.game.stop()
        if self.telnet is not None:
            await self.telnet.close()
        await self.hub.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """``async with gateway.running()``: started on entry, stopped on exit."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


def _renderers(settings: Settings, game: Game | None, given: Renderers | None) -> Renderers:
    """The text renderers (telnet, and MUD clients on ``/ws``): the defaults, under those
    given, a game's or the ones ``MUDGATE_TELNET_RENDERERS`` names."""
    renderers = Renderers()
    if settings.telnet_renderers is not None:
        module, _, attr = settings.telnet_renderers.partition(":")
        named = getattr(importlib.import_module(module), attr)
        if not isinstance(named, Renderers):
            kind = type(named).__name__
            raise TypeError(f"MUDGATE_TELNET_RENDERERS names a {kind}, not a mudgate.Renderers")
        renderers.update(named)
    if game is not None:
        renderers.update(game.renderers)
    if given is not None:
        renderers.update(given)
    return renderers


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


def create_app(gateway: Gateway | None = None) -> MudgateApp:
    """The gateway's ASGI app (FastAPI, with ``/ws`` and ``/events`` answered before it); the
    gateway starts and stops with the app's lifespan. Without a gateway, one is built from
    the environment's settings (``MUDGATE_*``)."""
    gateway = gateway or Gateway()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    return web_app(
        settings=gateway.settings,
        clock=gateway.clock,
        hub=gateway.hub,
        backplane=gateway.backplane,
        sockets=gateway.sockets,
        monitor=gateway.monitor,
        watch=gateway.watch,
        levels=gateway.levels,
        history=gateway.history,
        tracker=gateway.tracker,
        notifier=gateway.notifier,
        lag=gateway.lag,
        janitor=gateway.janitor,
        diagnostics=gateway.diagnostics,
        commands=gateway.commands,
        command_stats=gateway.command_stats,
        authenticator=gateway.authenticator,
        renderers=gateway.renderers,
        admin_token=gateway.admin_token,
        lifespan=lifespan,
        game_link=gateway.game_link,
        game_in_process=gateway.game is not None,
        telnet=gateway.telnet,
    )


def mount(parent: FastAPI, path: str, gateway: Gateway) -> MudgateApp:
    """Mount ``gateway``'s app into an existing FastAPI app under ``path``, its lifespan
    composed with the parent's (Starlette does not run a mounted app's lifespan by itself):
    the gateway starts first and stops last, so the parent's code can use its hub."""
    app = create_app(gateway)
    parent.mount(path, app)
    parent_lifespan = parent.router.lifespan_context

    @asynccontextmanager
    async def lifespan(outer: Any) -> AsyncIterator[Any]:
        async with app.router.lifespan_context(app), parent_lifespan(outer) as state:
            yield state

    parent.router.lifespan_context = lifespan
    return app


def standalone(settings: Settings) -> tuple[MudgateApp, Gateway]:
    """A gateway built from ``settings`` with nothing but the built-in commands, and its app:
    what ``mudgate serve`` serves, and what each of its workers builds."""
    gateway = Gateway(settings)
    return create_app(gateway), gateway
