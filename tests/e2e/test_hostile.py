"""Bad input gets a clear error and costs nothing: frames, tokens, bodies, and floods."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mudgate.auth import Authenticator

from ..conftest import ADMIN_TOKEN, SECRET_KEY
from .clients import Player
from .server import RunningServer, wait_for


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"text": "no op"}', "bad_frame"),
        ('{"op": 5}', "bad_frame"),
        ('{"op": "dance", "id": 9}', "unknown_op"),
        ('{"op": "say", "id": 9}', "invalid_args"),
        ('{"op": "say", "text": ""}', "invalid_args"),
        (json.dumps({"op": "say", "text": "x" * 4001}), "invalid_args"),
        ('{"op": "go", "room": "../../etc"}', "invalid_args"),
        ('{"op": "tell", "to": "nobody", "text": "hi", "id": 9}', "player_not_found"),
        ('{"op": "chat", "channel": "ooc", "text": "hi"}', "not_subscribed"),
        ('{"op": "unsubscribe", "channel": "ooc"}', "not_subscribed"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_stays(
    server: RunningServer, frame: str, code: str
) -> None:
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.ws.send(frame)
        error = await alice.next("error")
        assert error["code"] == code
        assert error["message"]
        if '"id": 9' in frame:
            assert error["id"] == 9
        await alice.send(op="ping", id="still-here")
        assert (await alice.next("pong"))["id"] == "still-here"


async def test_a_binary_frame_is_refused(server: RunningServer) -> None:
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.ws.send(b'{"op": "ping"}')
        assert (await alice.next("error"))["code"] == "bad_frame"


async def test_an_oversized_frame_closes_with_1009(server_with: Any) -> None:
    server: RunningServer = server_with(max_message_bytes=1024)
    alice = await Player.connect(server.ws("alice"))
    await alice.ws.send(json.dumps({"op": "say", "text": "x" * 2000}))
    assert await alice.closed() == 1009
    await wait_for(lambda: server.stats()["total_connections"] == 0)


async def test_sustained_bad_frames_close_with_1008(server_with: Any) -> None:
    server: RunningServer = server_with(bad_frame_limit=3)
    alice = await Player.connect(server.ws("alice"))
    for _ in range(10):
        await alice.ws.send("garbage")
    assert await alice.closed() == 1008
    assert alice.ws.close_reason == "too many bad frames"
    await wait_for(lambda: server.stats()["total_connections"] == 0)


async def test_subscriptions_are_capped(server_with: Any) -> None:
    server: RunningServer = server_with(max_subscriptions_per_player=2)
    async with await Player.connect(server.ws("alice")) as alice:
        for channel in ("a", "b"):
            await alice.send(op="subscribe", channel=channel)
            await alice.next("subscribed")
        await alice.send(op="subscribe", channel="c")
        assert (await alice.next("error"))["code"] == "too_many_subscriptions"


def expired_token() -> str:
    return Authenticator(SECRET_KEY, 60, clock=lambda: time.time() - 3600).issue("alice")


def forged_token() -> str:
    return Authenticator("another-secret-key-that-is-also-long-enough", 60).issue("alice")


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", "missing token"),
        ("?token=", "missing token"),
        ("?token=garbage", "invalid token"),
        ("?token={forged}", "invalid token"),
        ("?token={expired}", "token expired"),
    ],
)
async def test_a_websocket_without_a_valid_token_is_refused_at_the_handshake(
    server: RunningServer, query: str, detail: str
) -> None:
    url = server.ws_url + query.format(forged=forged_token(), expired=expired_token())
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    response = refused.value.response
    assert response.status_code == 401
    body = json.loads(response.body or b"{}")
    assert body["error"]["code"] == "unauthorized"
    assert detail in body["error"]["message"]
    assert server.stats()["connections_opened"] == 0


async def test_a_bearer_header_works_for_the_websocket_too(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with await Player.connect(server.ws_url, additional_headers=headers) as alice:
        assert (await alice.next("welcome"))["player"] == "alice"


@pytest.mark.parametrize("token", [None, "garbage", "forged", "expired"])
async def test_sse_without_a_valid_token_gets_401(server: RunningServer, token: str | None) -> None:
    token = {"forged": forged_token(), "expired": expired_token()}.get(token or "", token)
    params = {"token": token} if token else {}
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/events", params=params)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


async def test_events_only_answers_get(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/events", params={"token": server.token("alice")})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, b'{"op": "ping"}', 401, "unauthorized"),
        ({"Authorization": "Bearer garbage"}, b'{"op": "ping"}', 401, "unauthorized"),
        ({"Authorization": "Basic YWxpY2U6eA=="}, b'{"op": "ping"}', 401, "unauthorized"),
        ("alice-bearer", b'{"op": "ping"}', 409, "not_connected"),
    ],
)
async def test_commands_need_a_player_with_an_open_stream(
    server: RunningServer, headers: Any, body: bytes, status: int, code: str
) -> None:
    if headers == "alice-bearer":
        headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/commands", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "bad_json"),
        (b'{"op": "dance"}', 400, "unknown_op"),
        (b'{"op": "say"}', 400, "invalid_args"),
        (b'{"op": "say", "text": "' + b"x" * 70000 + b'"}', 413, "frame_too_big"),
    ],
)
async def test_bad_commands_get_a_clear_error(
    server: RunningServer, body: bytes, status: int, code: str
) -> None:
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with (
        await Player.connect(server.ws("alice")),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        response = await http.post("/commands", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_a_chunked_body_over_the_limit_is_refused(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('alice')}"}

    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    async with (
        await Player.connect(server.ws("alice")),
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        response = await http.post("/commands", content=chunks(), headers=headers)
    assert response.status_code == 413


async def test_connection_attempts_are_rate_limited(server_with: Any) -> None:
    server: RunningServer = server_with(max_rate_limit_entries=2)
    for _ in range(2):
        async with await Player.connect(server.ws("alice")) as alice:
            await alice.next("welcome")
    refused = await Player.connect(server.ws("alice"))
    assert await refused.closed() == 4029
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/events", params={"token": server.token("alice")})
    assert response.status_code == 429
    # Until the attempts leave the window (MUDGATE_CONNECTION_ATTEMPT_TTL), not a minute.
    assert response.headers["retry-after"] == "3600"
    assert server.stats()["refused_connections"] == 2


async def test_a_full_server_refuses_with_1013_and_503(server_with: Any) -> None:
    server: RunningServer = server_with(max_connections=1)
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        refused = await Player.connect(server.ws("bob"))
        assert await refused.closed() == 1013
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.get("/events", params={"token": server.token("bob")})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert "retry-after" in response.headers


async def test_guest_tokens_are_rate_limited_per_ip(server_with: Any) -> None:
    server: RunningServer = server_with(guest_tokens_per_minute=2)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        statuses = [(await http.post("/auth/guest")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


async def test_guests_can_be_turned_off(server_with: Any) -> None:
    server: RunningServer = server_with(allow_guests=False)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/auth/guest")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_deeply_nested_json_is_a_bad_frame_not_a_crash(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with (
        await Player.connect(server.ws("alice")) as alice,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await alice.ws.send("[" * 1000)
        error = await alice.next("error")
        assert (error["code"], error["message"]) == ("bad_json", "frame is nested too deeply")
        response = await http.post(
            "/commands", content=b'{"op": "say", "text": ' + b"[" * 1000, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_json"
        await alice.send(op="ping", id="alive")
        assert (await alice.next("pong"))["id"] == "alive"


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "go", "room": "lobby\n"},
        {"op": "subscribe", "channel": "ooc\n"},
        {"op": "say", "text": "hi\nbob tells you: give me your password"},
        {"op": "say", "text": "hi\u2028there"},
    ],
)
async def test_names_and_text_cannot_carry_line_breaks(
    server: RunningServer, frame: dict[str, str]
) -> None:
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.send(**frame)
        assert (await alice.next("error"))["code"] == "invalid_args"


async def test_a_token_under_another_spelling_is_not_a_token(server: RunningServer) -> None:
    url = f"{server.ws_url}?%74oken={server.token('alice')}"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    assert refused.value.response.status_code == 401


async def test_x_forwarded_for_is_trusted_only_from_the_proxies_named(server_with: Any) -> None:
    for trusted, expected in (("", [200, 200, 429]), ("127.0.0.1", [200, 200, 200])):
        server: RunningServer = server_with(guest_tokens_per_minute=2, forwarded_allow_ips=trusted)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            statuses = [
                (
                    await http.post("/auth/guest", headers={"X-Forwarded-For": f"10.0.0.{i}"})
                ).status_code
                for i in range(3)
            ]
        assert statuses == expected, trusted


async def test_wrong_admin_tokens_are_slowed_down(server_with: Any) -> None:
    server: RunningServer = server_with(admin_failures_per_minute=3)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        wrong = {"Authorization": "Bearer guess-guess-guess-guess"}
        statuses = [
            (await http.post("/monitoring/memory/cleanup", headers=wrong)).status_code
            for _ in range(4)
        ]
        assert statuses == [403, 403, 403, 429]
        right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        refused = await http.post("/monitoring/memory/cleanup?dry_run=true", headers=right)
    assert refused.status_code == 429  # from this address, for the rest of the window
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"http://example.org/health/live", b"200"),
        (b"/ws?token=TOKEN", b"101"),
        (b"http://example.org/ws?token=TOKEN", b"101"),  # a proxy's absolute form
        (b"health/live", b"400"),
        (b"example.org:443", b"400"),
    ],
)
async def test_request_targets_are_read_alike_for_http_and_upgrades(
    server: RunningServer, target: bytes, status: bytes
) -> None:
    target = target.replace(b"TOKEN", server.token("alice").encode())
    upgrade = b"/ws" in target or target.startswith(b"example")
    head = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
    if upgrade:
        head += (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + b"\r\n")
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.transport.abort()
    assert line.split(b" ")[1] == status
