"""Below ASGI, over WebSockets: ping floods from clients that never read, handshakes with
headers too large to hold, messages in endless fragments, compression and what it costs.
Each against a real ``mudgate serve``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .floods import (
    MIB,
    compressed_burst,
    compressed_players,
    fragment_flood,
    huge_upgrade,
    inflate_bomb,
    is_compressed,
    ping_flood,
    unfinished_messages,
    websocket,
)
from .gateway import Gateway, Healthy, PeakRSS, connection, poll, read_all, settled


async def test_a_ping_flood_from_a_client_that_never_reads_costs_nothing(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()

    async with Healthy(server) as healthy:
        await ping_flood(server)
        await poll(lambda: server.memory()["connections"]["active_websockets"] == 1)
    healthy.assert_served()
    assert server.sockets()["control_flood"] == 1
    assert server.rss_mb() - before < 10


async def test_a_ping_flood_is_closed_with_1008(gateway: Callable[..., Gateway]) -> None:
    server = gateway(control_frame_limit=5)
    async with connect(server.ws("pinger"), ping_interval=None) as ws:
        for _ in range(10):
            await ws.ping()
        async with asyncio.timeout(5):
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
        assert ws.close_code == 1008
        assert ws.close_reason == "too many control frames"


async def test_an_upgrade_with_huge_headers_is_answered_431_and_closed(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()

    async with Healthy(server) as healthy:
        answers = await huge_upgrade(server)
    healthy.assert_served()
    assert {answer.split(b"\r\n")[0] for answer in answers} == {
        b"HTTP/1.1 431 Request Header Fields Too Large"
    }
    assert server.rss_mb() - before < 10


async def test_a_browser_with_a_large_cookie_is_told_so(gateway: Callable[..., Gateway]) -> None:
    server = gateway(max_request_head_bytes=8192)
    cookie = {"Cookie": "session=" + "c" * 10000}
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(10):
            await connect(server.ws("alice"), additional_headers=cookie)
    assert refused.value.response.status_code == 431


async def test_an_invalid_handshake_is_answered_400(gateway: Callable[..., Gateway]) -> None:
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Sec-WebSocket-Key" in answer
    assert server.sockets()["malformed"] == 1


# What a message costs while it arrives


async def test_a_message_in_more_frames_than_allowed_is_closed_with_1008(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()
    async with Healthy(server) as healthy:
        closes = await fragment_flood(server, players=20, fragment=b"aa", frames=20000)
    healthy.assert_served()
    assert closes == [(1008, "message in too many frames")] * 20
    assert server.sockets()["fragment_flood"] == 20
    assert server.rss_mb() - before < 10


async def test_endless_empty_continuation_frames_are_closed_with_1008(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()
    async with Healthy(server) as healthy:
        # 6 bytes each on the wire: 2 MiB of them per player unless the server stops it.
        closes = await fragment_flood(server, players=10, fragment=b"", frames=350000)
    healthy.assert_served()
    assert closes == [(1008, "message in too many frames")] * 10
    assert server.rss_mb() - before < 10


async def test_a_message_in_tiny_fragments_costs_its_bytes_not_an_object_each(
    gateway: Callable[..., Gateway],
) -> None:
    # With the fragment cap lifted, 100 messages of 15 KB, each sent as 7,500 fragments of
    # 2 bytes (60 KB on the wire) and never finished. One object per fragment cost 425 KiB
    # a connection; joined as they arrive, a message costs about its bytes.
    server = gateway(max_message_fragments=1000000)
    players, payload = 100, 15000
    async with Healthy(server) as healthy:
        before = server.rss_mb()
        async with unfinished_messages(server, players=players, size=payload, frame_bytes=2):
            await settled(server)
            grown = server.rss_mb() - before
    healthy.assert_served()
    assert grown * MIB / players < 2 * payload + 32 * 1024


# Compression: bounded, counted, capped


async def test_compression_past_its_cap_is_declined_and_the_player_plays_on(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(ws_per_message_deflate=True, max_compressed_connections=3)
    async with compressed_players(server, players=5) as players:
        assert [is_compressed(player) for player in players] == [True] * 3 + [False] * 2
        sockets = server.sockets()
        assert (sockets["compressed"], sockets["compressed_capacity"]) == (3, 3)
        assert sockets["compression_declined"] == 2
        await players[0].send(op="say", text="squeezed " * 50)
        for player in players:
            assert (await player.next("say"))["text"].startswith("squeezed squeezed")
    await poll(lambda: server.sockets()["compressed"] == 0)


async def test_a_client_that_does_not_bound_its_window_gets_no_compression(
    gateway: Callable[..., Gateway],
) -> None:
    # Without client_max_window_bits, a client may compress with a 32 KiB window that the
    # server would have to hold to decompress.
    server = gateway(ws_per_message_deflate=True)
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    (_, writer), response = await websocket(server.port, server.token("wide"), extra=offer)
    writer.transport.abort()
    assert b"permessage-deflate" not in response
    assert server.sockets()["compressed"] == 0


async def test_compressed_connections_cost_what_the_budget_says(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(ws_per_message_deflate=True)
    line = {line["structure"]: line for line in server.memory()["memory_budget"]["lines"]}
    per_connection = line["compressed_connections"]["bytes_per_entry"]
    assert line["compressed_connections"]["max_entries"] == 1000
    before = server.rss_mb()
    async with compressed_players(server, players=100) as players:
        # Each compresses and decompresses once (zlib allocates the windows as it goes).
        await players[0].send(op="say", text="squeezed " * 50)
        for player in players:
            await player.next("say")
        await settled(server)
        grown = server.rss_mb() - before
    plain = 11 * 1024  # an idle WebSocket (bench/idle_memory.py)
    assert grown * MIB / 100 < plain + 1.5 * per_connection


async def test_many_compressed_messages_in_one_read_are_inflated_one_at_a_time(
    gateway: Callable[..., Gateway],
) -> None:
    # 100 messages of 64 KB, 10 KB on the wire: parsed a read at a time, that was 40-odd
    # inflated messages (2.6 MB) per connection at once; a message at a time, it is one.
    server = gateway(ws_per_message_deflate=True)
    async with Healthy(server) as healthy:
        before = server.rss_mb()
        async with PeakRSS(server) as peak:
            closes = await compressed_burst(server, players=20, messages=100, size=65000)
    healthy.assert_served()
    # Not JSON: bad frames, then closed for them.
    assert closes == [(1008, "too many bad frames")] * 20
    assert (peak.mb - before) * MIB / 20 < 4 * 65536 + 64 * 1024


async def test_an_inflate_bomb_is_closed_with_1009(gateway: Callable[..., Gateway]) -> None:
    server = gateway(ws_per_message_deflate=True)
    before = server.rss_mb()
    async with Healthy(server) as healthy:
        closed = await inflate_bomb(server)
    healthy.assert_served()
    assert closed is not None
    assert closed[0] == 1009
    assert server.rss_mb() - before < 10
