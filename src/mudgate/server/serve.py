"""``serve``: uvicorn with mudgate's protocol classes, listening socket and shutdown order."""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import uvicorn
from uvicorn.server import ServerState

from ..logs import configure_logging
from ..protocol import CloseCode
from ..settings import Settings
from .context import ProtocolLimits, ServerContext
from .http import HTTPProtocol
from .sockets import RESERVED_DESCRIPTORS, SocketTable

__all__ = [
    "Drain",
    "MudgateServer",
    "ProtocolFactory",
    "Servable",
    "bind_socket",
    "create_server",
    "reuse_port_socket",
    "serve",
]

logger = logging.getLogger("mudgate")

# How the server has the gateway's players leave at shutdown: close with a code, wait at most
# so many seconds.
Drain = Callable[[CloseCode, float], Awaitable[None]]


class Servable(Protocol):
    """What the server needs of the gateway it serves (``mudgate.gateway.Gateway`` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def sockets(self) -> SocketTable: ...
    async def drain(self, code: CloseCode, timeout_seconds: float) -> None: ...


class ProtocolFactory:
    """What uvicorn builds every connection's protocol with (``Config(http=...)``): each new
    ``HTTPProtocol`` gets the one ``ServerContext`` of its server."""

    def __init__(self, limits: ProtocolLimits, sockets: SocketTable) -> None:
        self.limits = limits
        self.sockets = sockets
        self._context: ServerContext | None = None

    def __call__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> HTTPProtocol:
        if self._context is None:
            self._context = ServerContext(
                app=config.loaded_app,
                limits=self.limits,
                sockets=self.sockets,
                state=server_state,
                app_state=app_state,
                root_path=config.root_path,
                loop=_loop or asyncio.get_running_loop(),
            )
        return HTTPProtocol(self._context)


class MudgateServer(uvicorn.Server):
    """uvicorn's server, stopping in the order players need: their connections first."""

    def __init__(
        self, config: uvicorn.Config, drain: Drain | None, shutdown_timeout: float
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.shutdown_timeout = shutdown_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting new connections.
        for server in getattr(self, "servers", ()):
            server.close()
        # Tell every player the server is restarting (1012: come back) and wait, bounded,
        # until each has left through the hub's one way out.
        if self.drain is not None:
            await self.drain(CloseCode.SERVICE_RESTART, self.shutdown_timeout)
        # Then uvicorn's part: requests in flight, idle connections, the lifespan.
        await super().shutdown(sockets)


def server_config(
    settings: Settings, app: Any, sockets: SocketTable, **overrides: object
) -> uvicorn.Config:
    """The uvicorn configuration mudgate runs under."""
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "http": ProtocolFactory(ProtocolLimits.from_settings(settings), sockets),
        "ws": "none",  # mudgate's HTTP protocol upgrades to mudgate's WebSocket protocol
        "lifespan": "on",
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout),
        "log_config": None,
        # X-Forwarded-* only from the proxies named; by default from nobody.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": list(settings.forwarded_allow_ips),
        "headers": [("server", "mudgate")],
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, so that several processes'
    sockets share the port (not listening yet); raises OSError if another server holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_socket(
    config: uvicorn.Config, settings: Settings, *, reuse_port: bool = False
) -> socket.socket:
    """The listening socket, whose options every accepted socket inherits.

    TCP_USER_TIMEOUT: data (an SSE keep-alive, a ping) left unacknowledged for ping_timeout
    ends the connection, even if the peer vanished silently. SO_SNDBUF and SO_RCVBUF: the
    kernel memory one connection can hold is bounded, and counted in the memory budget.
    ``reuse_port``: one of the workers' sockets on a shared port (SO_REUSEPORT), among which
    the kernel spreads new connections.
    """
    if reuse_port:
        sock = reuse_port_socket(config.host, config.port)
        sock.set_inheritable(True)
    else:
        sock = config.bind_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, settings.socket_receive_buffer_bytes)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(settings.ping_timeout * 1000)
        )
    return sock


def raise_descriptor_limit(wanted: int) -> int | None:
    """Raise the soft file-descriptor limit towards ``wanted``, as far as the hard limit
    allows; returns the limit in force (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def create_server(
    app: Any,
    settings: Settings,
    *,
    sockets: SocketTable,
    drain: Drain | None,
    reuse_port: bool = False,
    **overrides: object,
) -> tuple[MudgateServer, socket.socket]:
    """The server ``mudgate serve`` runs, bound to its listening socket, not yet started.

    ``sockets`` is the table the protocol layer fills (the gateway's, which monitoring reads);
    ``drain`` is called first at shutdown, so players are told before anything else stops
    (None: an app with no players to drain). One server drains one gateway. ``reuse_port``:
    a worker's, sharing the port with the others (``serve_workers``).
    """
    config = server_config(settings, app, sockets, **overrides)
    sock = bind_socket(config, settings, reuse_port=reuse_port)
    limit = raise_descriptor_limit(sockets.capacity + RESERVED_DESCRIPTORS)
    if limit is not None:
        sockets.fit(limit)
    return MudgateServer(config, drain, settings.shutdown_timeout), sock


def serve(app: Any, gateway: Servable, log_level: str = "info") -> None:
    """Serve ``app`` (``create_app(gateway)``, or a game's app with it mounted) the way
    ``mudgate serve`` does, until interrupted: mudgate's logs, protocol classes and limits.

    One process: for ``workers`` above 1, ``serve_workers`` takes a function that builds the
    app and its gateway from the settings, as each worker builds its own.
    """
    settings = gateway.settings
    if settings.workers > 1:
        raise ValueError(
            "serve() runs one process; for MUDGATE_WORKERS > 1 call "
            "mudgate.serve_workers(build, settings), where build(settings) returns "
            "(app, gateway)"
        )
    configure_logging(log_level, settings.log_format)
    server, sock = create_server(app, settings, sockets=gateway.sockets, drain=gateway.drain)
    host, port = sock.getsockname()[:2]
    logger.info(f"serving on http://{host}:{port}", extra={"host": host, "port": port})
    server.run(sockets=[sock])
