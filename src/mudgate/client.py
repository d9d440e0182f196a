"""An asyncio client for a mudgate server: a bot, a load test, a game's own tests.

    async with Client("ws://127.0.0.1:54731/ws", token=token) as client:
        await client.send({"op": "say", "text": "hello"})
        async for message in client:
            print(message)

It reconnects the way ``/play`` does, by close code: at once after a recycle or a restart,
with jittered exponential backoff otherwise (at least as long as the code asks), with a new
token (from ``token_factory``) after a refusal (4001, or a handshake answered 401), and not at
all after a normal close, a policy violation, an operator's disconnect or being replaced
(iteration then ends, and ``recv`` raises ``Closed``). What the server sends waits in a
bounded queue: a client that stops reading stops reading the socket too, and the server's
outbox decides (4008).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .protocol import CloseCode

__all__ = ["Client", "Closed"]

logger = logging.getLogger("mudgate.client")

NO_RECONNECT = frozenset(
    {CloseCode.NORMAL, CloseCode.POLICY_VIOLATION, CloseCode.DISCONNECTED, CloseCode.REPLACED}
)
AT_ONCE = frozenset({CloseCode.RECYCLED, CloseCode.SERVICE_RESTART})
# The least a close code asks the client to wait, seconds.
BACKOFF_FLOOR = {
    CloseCode.GOING_AWAY: 1.0,
    CloseCode.SLOW_CONSUMER: 1.0,
    CloseCode.TRY_AGAIN_LATER: 2.0,
    CloseCode.RATE_LIMITED: 60.0,
}
TokenFactory = Callable[[], "str | Awaitable[str]"]


class Closed(Exception):
    """The server ended the session for good (``code``), or the client was closed."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code}): {reason}" if reason else f"closed ({code})")
        self.code = code
        self.reason = reason


def _close_code(code: int | None) -> CloseCode | None:
    """The close code as mudgate's enum; None for one mudgate does not send (1006, say)."""
    try:
        return None if code is None else CloseCode(code)
    except ValueError:
        return None


class Client:
    """One player's connection to ``url`` (``ws://host:port/ws``), kept open until closed."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_factory: TokenFactory | None = None,
        reconnect: bool = True,
        max_backoff: float = 30.0,
        queue_size: int = 1000,
    ) -> None:
        if token is None and token_factory is None:
            raise ValueError("give a token or a token_factory")
        self.url = url
        self.token = token
        self._token_factory = token_factory
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self._inbox: asyncio.Queue[dict[str, Any] | Closed] = asyncio.Queue(queue_size)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed: Closed | None = None
        self._connected_once = False
        self.reconnects = 0

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (and keep it open); returns once the first one is open."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        opened = asyncio.ensure_future(self._connected.wait())
        await asyncio.wait((opened, self._runner), return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():
            opened.cancel()
            self._runner.result()  # the first attempt failed for good: say why
            raise self._closed or Closed(None, "could not connect")

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame, waiting for the connection if it is being re-established."""
        while True:
            if self._closed is not None:
                raise self._closed
            await self._connected.wait()
            ws = self._ws
            if ws is None:
                continue
            try:
                await ws.send(json.dumps(frame))
                return
            except ConnectionClosed:
                await asyncio.sleep(0)  # the runner notices and reconnects

    async def recv(self) -> dict[str, Any]:
        """The next event or error from the server; raises Closed once the session is over."""
        item = await self._inbox.get()
        if isinstance(item, Closed):
            self._inbox.put_nowait(item)  # every later recv says so too
            raise item
        return item

    async def next(self, *events: str, within: float | None = None) -> dict[str, Any]:
        """The next event named one of ``events`` (or an error), skipping the rest; TimeoutError
        if none comes ``within`` seconds (None: wait as long as it takes)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.recv()
                name = message.get("event") if message.get("type") == "event" else "error"
                if name in events or name == "error":
                    return message

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except Closed:
                return

    async def close(self) -> None:
        """End the session (code 1000); pending ``recv`` calls raise Closed."""
        self._finish(Closed(CloseCode.NORMAL, "closed by the client"))
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait((self._runner,))

    # The connection's life

    async def _run(self) -> None:
        attempt = 0
        while self._closed is None:
            code, opened = await self._session()
            if opened:
                attempt = 0  # the backoff starts over after a connection that worked
            if self._closed is not None:
                return
            if not self.reconnect or code in NO_RECONNECT:
                self._finish(Closed(code, code.reason if code is not None else ""))
                return
            if code is CloseCode.UNAUTHORIZED:
                if self._token_factory is None:
                    self._finish(Closed(code, "the token was refused and there is no factory"))
                    return
                self.token = None
            self.reconnects += 1
            await asyncio.sleep(self._delay(code, attempt))
            attempt += 1

    async def _session(self) -> tuple[CloseCode | None, bool]:
        """One connection, from the handshake to its close: how it ended, and whether it
        opened at all."""
        try:
            if self.token is None:
                self.token = await self._new_token()
            async with connect(self._with_token(self.token)) as ws:
                self._ws, self._connected_once = ws, True
                self._connected.set()
                try:
                    async for raw in ws:
                        await self._inbox.put(json.loads(raw))
                except ConnectionClosed:
                    pass  # how it ended is in close_code
            return _close_code(ws.close_code), True
        except InvalidStatus as refused:
            if refused.response.status_code != 401:
                raise
            return CloseCode.UNAUTHORIZED, False
        except OSError as error:
            if not self._connected_once:
                raise  # the server is not there at all: connect() says so
            logger.debug("reconnecting to %s failed: %r", self.url, error)
            return CloseCode.INTERNAL_ERROR, False
        finally:
            self._ws = None
            self._connected.clear()

    def _delay(self, code: CloseCode | None, attempt: int) -> float:
        if code in AT_ONCE or code is CloseCode.UNAUTHORIZED:
            return 0.0
        backoff = min(self.max_backoff, 0.5 * 2.0 ** min(attempt, 16))
        floor = BACKOFF_FLOOR.get(code, 0.0) if code is not None else 0.0
        return max(floor, backoff) * random.uniform(0.8, 1.2)

    async def _new_token(self) -> str:
        assert self._token_factory is not None
        token = self._token_factory()
        if inspect.isawaitable(token):
            token = await token
        return token

    def _with_token(self, token: str) -> str:
        scheme, netloc, path, query, fragment = urlsplit(self.url)
        query = "&".join(filter(None, [query, urlencode({"token": token})]))
        return urlunsplit((scheme, netloc, path, query, fragment))

    def _finish(self, closed: Closed) -> None:
        if self._closed is None:
            self._closed = closed
            try:
                self._inbox.put_nowait(closed)
            except asyncio.QueueFull:  # a reader is behind: make room for the last word
                self._inbox.get_nowait()
                self._inbox.put_nowait(closed)
