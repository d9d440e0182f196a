"""A real mudgate server (uvicorn with mudgate's protocol layer) on a free port, in a thread
with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mudgate.auth import Authenticator
from mudgate.gateway import Gateway, create_app
from mudgate.hub import Hub
from mudgate.server import create_server
from mudgate.settings import Settings

T = TypeVar("T")


class RunningServer:
    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] | None = None,
        app: Any = None,
        gateway: Gateway | None = None,
        prefix: str = "",
        *,
        port: int = 0,
    ) -> None:
        """Serve ``app`` (by default ``gateway``'s, by default a gateway built from
        ``settings``) on ``port`` (by default a free one)."""
        self.settings = settings
        self.gateway = gateway or Gateway(settings, **({"clock": clock} if clock else {}))
        self.app = app or create_app(self.gateway)
        self.hub: Hub = self.gateway.hub
        self.server, self._sock = create_server(
            self.app,
            settings,
            sockets=self.gateway.sockets,
            drain=self.gateway.drain,
            port=port,
            log_level="warning",
        )
        self.port = self._sock.getsockname()[1]
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}{prefix}/ws"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="mudgate-server", daemon=True)
        self.authenticator = Authenticator(
            settings.secret_key.get_secret_value() if settings.secret_key else "", 3600
        )

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        ready = threading.Event()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server failed to start")
            ready.wait(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()

    def token(self, player_id: str) -> str:
        return self.authenticator.issue(player_id)

    def ws(self, player_id: str) -> str:
        return f"{self.ws_url}?token={self.token(player_id)}"

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's loop (where the hub lives) and return its result."""
        assert self.loop is not None

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def stats(self) -> dict[str, int]:
        return self.call(lambda: self.hub.stats().as_dict())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)


@contextmanager
def running_server(
    settings: Settings, clock: Callable[[], float] | None = None
) -> Iterator[RunningServer]:
    server = RunningServer(settings, clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true: for conditions another process brings about."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
