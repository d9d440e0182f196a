"""Below ASGI, over plain HTTP: heads that never end, sockets that never speak, slow lorises,
pipelines nobody reads, bodies that never end, requests framed two ways at once. Each against
a real ``mudgate serve``, with a healthy player served throughout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from ..e2e.clients import Player
from .floods import endless_header, slow_bodies, slow_loris, unread_pipeline
from .gateway import Gateway, Healthy, connection, poll, read_all


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_code_of(response: bytes) -> str:
    code: str = json.loads(response.partition(b"\r\n\r\n")[2])["error"]["code"]
    return code


async def test_an_endless_header_line_gets_431_and_costs_nothing(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    before = server.rss_mb()

    async with Healthy(server) as healthy:
        answers = await endless_header(server, clients=10, megabytes=40)
    healthy.assert_served()
    assert [status_of(answer) for answer in answers] == [431] * 10
    assert error_code_of(answers[0]) == "headers_too_large"
    assert server.rss_mb() - before < 10
    assert server.sockets()["head_too_large"] == 10


async def test_a_long_request_line_gets_414_even_in_one_piece(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_all(reader)
    assert status_of(answer) == 414
    assert error_code_of(answer) == "uri_too_long"
    # Headers over the cap in one piece, too.
    async with connection(server.port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n\r\n")
        assert status_of(await read_all(reader)) == 431


async def test_silent_sockets_cannot_lock_a_healthy_client_out(
    gateway: Callable[..., Gateway],
) -> None:
    # A process at a 256-descriptor limit, and 1,000 sockets that never send a byte.
    server = gateway(nofile=256, request_timeout=2)
    capacity = server.sockets()["capacity"]
    assert capacity == 256 - 64
    async with Healthy(server) as healthy:
        silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(1000)]
        # New arrivals evict the longest waiters: a healthy request still gets in.
        for _ in range(20):
            assert (await asyncio.to_thread(server.get, "/health/live"))["status"] == "ok"
        sockets = await asyncio.to_thread(server.sockets)
        assert sockets["open"] <= capacity
        assert sockets["evicted"] >= 1000 - capacity
        # Past the request deadline, every silent socket is closed.
        await poll(lambda: server.sockets()["open"] <= 2, timeout=10)
    healthy.assert_served()
    for reader, writer in silent:
        assert await read_all(reader) == b""  # closed without a word: nobody spoke
        writer.transport.abort()
    assert server.open_files() < 40


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /events?token=TOKEN HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws?token=TOKEN HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    ],
    ids=["http", "events", "websocket-upgrade"],
)
async def test_a_slow_loris_gets_408_at_the_request_deadline(
    gateway: Callable[..., Gateway], request_head: bytes
) -> None:
    server = gateway(request_timeout=1)
    request_head = request_head.replace(b"TOKEN", server.token("loris").encode())

    async with Healthy(server) as healthy:
        answers = await slow_loris(server, request_head, clients=50)
    healthy.assert_served()
    assert {status_of(answer) for answer in answers} == {408}
    assert error_code_of(answers[0]) == "request_timeout"
    assert server.sockets()["timed_out"] >= 50
    assert server.memory()["connections"]["total_connections"] == 0


async def test_a_pipeline_nobody_reads_is_not_answered_ahead(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(socket_send_buffer_bytes=4096, write_buffer_bytes=4096)
    before = server.rss_mb()
    sent = await unread_pipeline(server, seconds=3)
    # What the client sent waits in the kernels' buffers; the server answered only what fitted
    # in its write buffer, then stopped reading.
    answered = [r for r in server.records() if "/monitoring/memory" in r["event"]]
    assert sent > 1000
    assert len(answered) < 20
    assert server.rss_mb() - before < 10


async def test_a_body_over_the_limit_is_refused_and_the_answer_arrives(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(max_message_bytes=1024)
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        async with connection(server.port) as (reader, writer):
            # The whole body is sent, though the server answers after its first 1,024 bytes.
            writer.write(
                b"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + server.token("alice").encode() + b"\r\n"
                b"Content-Length: 200000\r\n\r\n" + b"x" * 200000
            )
            answer = await read_all(reader)
    assert status_of(answer) == 413
    assert error_code_of(answer) == "frame_too_big"


async def test_a_stream_whose_client_left_ends_at_once(gateway: Callable[..., Gateway]) -> None:
    # No keep-alive comment for a minute: the server learns of the client's leaving from its
    # end of the stream, not from its next write.
    server = gateway(ping_interval=60, ping_timeout=60)
    async with connection(server.port) as (reader, writer):
        writer.write(
            f"GET /events?token={server.token('carol')} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await reader.readuntil(b"welcome")
        writer.write_eof()  # what a client that closes its socket sends
        await poll(lambda: server.memory()["connections"]["active_sse"] == 0, timeout=5)


# Bodies that never end


async def test_a_player_may_have_two_commands_under_way_at_once(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    answers = await slow_bodies(server, players=1, requests=10, hold=2)
    assert answers.count(b"") == 2  # still being received
    refused = [answer for answer in answers if answer]
    assert [status_of(answer) for answer in refused] == [429] * 8
    assert error_code_of(refused[0]) == "rate_limited"
    assert b"retry-after: 1" in refused[0].lower()
    assert server.memory()["data_structures"]["commands_refused"] == 8
    # The held ones leave with their clients.
    await poll(lambda: server.memory()["data_structures"]["commands_in_flight"] == 0)
    # ... quietly: a client that leaves mid-body is no error of the server's.
    assert not [record for record in server.records() if record["level"] == "error"]


async def test_an_address_may_have_sixteen_commands_under_way_at_once(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    answers = await slow_bodies(server, players=20, requests=1, hold=2)
    assert answers.count(b"") == 16
    assert sorted(status_of(answer) for answer in answers if answer) == [429] * 4


async def test_slow_bodies_cannot_lock_a_healthy_client_out(
    gateway: Callable[..., Gateway],
) -> None:
    # 40 sockets, and one guest who keeps 80 bodies arriving (the per-player and per-address
    # caps lifted, to attack the socket table alone): a body that has not arrived is as
    # evictable as a silent socket, the longest first.
    server = gateway(
        max_sockets=40,
        max_commands_in_flight_per_player=1000,
        max_commands_in_flight_per_address=1000,
    )
    async with Healthy(server) as healthy:
        attack = asyncio.create_task(slow_bodies(server, players=1, requests=80, hold=5))
        await poll(lambda: server.sockets()["receiving"] >= 30)
        for _ in range(20):
            assert (await asyncio.to_thread(server.get, "/health/live"))["status"] == "ok"
        answers = await attack
    healthy.assert_served()
    sockets = server.sockets()
    assert sockets["refused"] == 0
    assert sockets["evicted"] >= 40
    assert answers.count(b"") >= 30  # dropped without a word, or still waiting at the end


# Framing: one reading of a request, or none


async def test_content_length_and_transfer_encoding_together_are_refused_and_closed(
    gateway: Callable[..., Gateway],
) -> None:
    # A proxy that frames by Content-Length forwards the hidden request as the body; a server
    # that frames by Transfer-Encoding would serve it (request smuggling, RFC 9112 6.1).
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(
            b"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Length: 47\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /monitoring/memory HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = await read_all(reader)
    assert status_of(answer) == 400
    assert error_code_of(answer) == "bad_request"
    assert b"ambiguous" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing served after it; the connection closed
    assert not [r for r in server.records() if "/monitoring/memory" in r["event"]]


async def test_a_websocket_handshake_must_be_a_get(gateway: Callable[..., Gateway]) -> None:
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(
            f"POST /ws?token={server.token('alice')} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        answer = await read_all(reader)
    assert status_of(answer) == 400
    assert b"GET" in answer
    assert server.memory()["connections"]["active_websockets"] == 0


async def test_http_1_0_is_refused_with_400_as_documented(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway()
    async with connection(server.port) as (reader, writer):
        writer.write(b"GET /health/live HTTP/1.0\r\n\r\n")
        answer = await read_all(reader)
    assert status_of(answer) == 400
    assert error_code_of(answer) == "bad_request"
    assert b"HTTP/1.1" in answer.partition(b"\r\n\r\n")[2]
