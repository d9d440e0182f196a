"""Vanished peers are found: unanswered pings, dropped SSE streams, and connection caps."""

from __future__ import annotations

import asyncio
import socket

import httpx

from .clients import Player, raw_websocket, reset
from .server import RunningServer, wait_for


async def test_a_websocket_that_stops_answering_pings_is_removed(server_with: object) -> None:
    server: RunningServer = server_with(ping_interval=0.2, ping_timeout=0.2)  # type: ignore[operator]
    silent = raw_websocket(server.port, server.token("silent"))
    await wait_for(lambda: server.stats()["active_websockets"] == 1)
    # Removed within ping_interval + ping_timeout (the poll allows for a loaded machine).
    await wait_for(lambda: server.stats()["active_websockets"] == 0, timeout=5)
    assert server.stats()["online_players"] == 0
    silent.close()


async def test_a_reset_websocket_is_removed(server: RunningServer) -> None:
    sock = raw_websocket(server.port, server.token("crash"))
    await wait_for(lambda: server.stats()["active_websockets"] == 1)
    reset(sock)
    await wait_for(lambda: server.stats()["total_connections"] == 0)


async def test_a_reset_sse_stream_is_removed(server: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /events?token={server.token('crash')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await wait_for(lambda: server.stats()["active_sse"] == 1)
    reset(sock)
    await wait_for(lambda: server.stats()["total_connections"] == 0)
    assert server.stats()["online_players"] == 0


async def test_sse_streams_carry_keepalive_comments(server_with: object) -> None:
    server: RunningServer = server_with(ping_interval=0.05)  # type: ignore[operator]
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=5) as http,
        http.stream("GET", "/events", params={"token": server.token("carol")}) as stream,
    ):
        async with asyncio.timeout(5):
            async for line in stream.aiter_lines():
                if line == ": keep-alive":
                    break


async def test_the_oldest_connection_of_a_player_is_closed_past_the_cap(
    server_with: object,
) -> None:
    server: RunningServer = server_with(max_connections_per_player=2)  # type: ignore[operator]
    first = await Player.connect(server.ws("alice"))
    second = await Player.connect(server.ws("alice"))
    third = await Player.connect(server.ws("alice"))
    assert await first.closed() == 4009
    assert first.ws.close_reason == "replaced"
    await third.next("welcome")
    assert server.stats()["active_websockets"] == 2
    await second.close()
    await third.close()
