"""A TCP proxy that can blip: what a flaky network does to a player.

    async with BlipProxy(("127.0.0.1", server_port)) as proxy:
        ... connect clients to proxy.port ...
        await proxy.blip(refuse_for=1.5)   # RST every open connection, refuse new ones a while

While refusing, the proxy accepts each new connection and resets it at once (SO_LINGER 0), so
a client sees its attempt fail in the handshake, not a clean "connection refused": the case a
client's reconnect loop must survive. ``resets_handshakes=False`` refuses by closing the
listening socket instead (ECONNREFUSED).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from types import TracebackType

__all__ = ["BlipProxy"]

_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with an RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


class BlipProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; ``blip`` cuts and refuses."""

    def __init__(self, upstream: tuple[str, int], *, resets_handshakes: bool = True) -> None:
        self.upstream = upstream
        self.resets_handshakes = resets_handshakes
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._refuse_until = 0.0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BlipProxy:
        await self._listen()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def blip(self, refuse_for: float = 1.5) -> None:
        """Reset every open connection, and refuse new ones for ``refuse_for`` seconds (returns
        at once; the refusal ends by itself)."""
        self._refuse_until = time.monotonic() + refuse_for
        for client, upstream in list(self._pairs):
            _reset(client)
            upstream.transport.abort()
            self.cut += 1
        self._pairs.clear()
        if not self.resets_handshakes and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            loop = asyncio.get_running_loop()
            loop.call_later(refuse_for, lambda: self._spawn(self._listen()))

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.refused += 1
            _reset(writer)
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
