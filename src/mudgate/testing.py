"""Testing a game built on mudgate: its app served for real on a free port, in the test's own
event loop, and players as ``mudgate.client.Client``s.

    async def test_walking_north() -> None:
        settings = Settings(secret_key="x" * 32)
        app, gateway = create_game(settings)
        async with serve_game(app, gateway, prefix="/mud") as game:
            async with game.player("alice") as alice:
                await alice.send({"op": "walk", "direction": "north"})
                assert (await alice.next("room", within=5))["room"] == "courtyard"

Everything below the app is what ``mudgate serve`` runs (mudgate's protocol layer, limits and
shutdown); only the port is chosen by the kernel and the logs are quieter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .auth import issue_token
from .client import Client
from .server import create_server
from .server.serve import Servable
from .settings import Settings

__all__ = ["GameServer", "serve_game"]


@dataclass(frozen=True)
class GameServer:
    """A game being served: where it listens, and its players."""

    settings: Settings
    port: int
    prefix: str = ""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.prefix}/ws"

    def token(self, player_id: str) -> str:
        return issue_token(self.settings, player_id)

    def player(self, player_id: str, **options: Any) -> Client:
        """A client for ``player_id``; ``async with`` it to connect (options: Client's)."""
        return Client(self.ws_url, token_factory=lambda: self.token(player_id), **options)


@asynccontextmanager
async def serve_game(app: Any, gateway: Servable, *, prefix: str = "") -> AsyncIterator[GameServer]:
    """Serve ``app`` (``create_app(gateway)``, or a game's app with the gateway mounted at
    ``prefix``) on a free port until the block ends, then shut it down the way SIGTERM would.
    The gateway's settings need a ``secret_key``: players' tokens are signed with it."""
    settings = gateway.settings
    if settings.secret_key is None:
        raise ValueError("serve_game needs settings with a secret_key, to sign players' tokens")
    server, sock = create_server(
        app,
        settings,
        sockets=gateway.sockets,
        drain=gateway.drain,
        port=0,
        log_level="warning",
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # it failed to start: say why
            await asyncio.sleep(0.01)
        yield GameServer(settings, sock.getsockname()[1], prefix)
    finally:
        server.should_exit = True
        await asyncio.wait((task,))
