"""A game's own accounts: tokens it mints with ``issue_token``, and its ``authenticate`` hook
deciding who connects, against a real server and real clients."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mudgate import Credentials, Gateway, TokenError, issue_token

from ..conftest import SECRET_KEY, make_settings
from .clients import Player
from .server import RunningServer


def test_issue_token_signs_the_documented_claims() -> None:
    settings = make_settings()
    token = issue_token(settings, "alice", ttl=120)
    claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], issuer="mudgate")
    assert claims["sub"] == "alice"
    assert claims["guest"] is False
    assert claims["exp"] - claims["iat"] == 120
    with pytest.raises(ValueError, match="MUDGATE_SECRET_KEY is not set"):
        issue_token(make_settings(secret_key=None), "alice")
    with pytest.raises(ValueError, match="invalid player id"):
        issue_token(settings, "not a name")


async def test_a_token_the_game_minted_opens_a_websocket() -> None:
    settings = make_settings()
    server = RunningServer(settings)
    server.start()
    try:
        token = issue_token(settings, "alice")
        async with await Player.connect(f"{server.ws_url}?token={token}") as alice:
            assert (await alice.next("welcome"))["player"] == "alice"
    finally:
        server.stop()


SESSIONS = {"s3cret-session": "bob"}


async def sessions(credentials: Credentials) -> str | None:
    """The game's sign-in: a session cookie of its own, else mudgate's token decides."""
    session = credentials.cookies.get("session")
    if session is None:
        return None
    await asyncio.sleep(0)  # as a database lookup would
    if session not in SESSIONS:
        raise TokenError("unknown session: sign in again")
    return SESSIONS[session]


@pytest.fixture
def game_server() -> RunningServer:
    settings = make_settings()
    return RunningServer(settings, gateway=Gateway(settings, authenticate=sessions))


async def test_the_hook_admits_its_own_sessions_refuses_bad_ones_and_defers_the_rest(
    game_server: RunningServer,
) -> None:
    game_server.start()
    try:
        url = game_server.ws_url
        # Its own session: the player the game named.
        async with await Player.connect(
            url, additional_headers={"Cookie": "session=s3cret-session"}
        ) as bob:
            assert (await bob.next("welcome"))["player"] == "bob"
        # A session it does not know: refused at the handshake, with the game's reason.
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers={"Cookie": "session=forged"})
        assert refused.value.response.status_code == 401
        assert b"unknown session" in refused.value.response.body
        # No session: mudgate's own token still works (guests, `mudgate token`).
        token = game_server.authenticator.issue("carol")
        async with await Player.connect(f"{url}?token={token}") as carol:
            assert (await carol.next("welcome"))["player"] == "carol"
        # SSE and POST /commands ask the same hook.
        async with httpx.AsyncClient(base_url=game_server.http_url) as client:
            session = {"Cookie": "session=s3cret-session"}
            async with client.stream("GET", "/events", headers=session) as stream:
                assert stream.status_code == 200
                reply = await client.post("/commands", json={"op": "who", "id": 1}, headers=session)
                assert reply.status_code == 202
            refused_post = await client.post(
                "/commands", json={"op": "who"}, headers={"Cookie": "session=forged"}
            )
            assert refused_post.status_code == 401
            assert "unknown session" in refused_post.json()["error"]["message"]
    finally:
        game_server.stop()


async def test_a_hook_that_names_an_invalid_player_refuses_the_client() -> None:
    settings = make_settings()
    server = RunningServer(
        settings, gateway=Gateway(settings, authenticate=lambda credentials: "not a name")
    )
    server.start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.ws_url)
        assert refused.value.response.status_code == 401
    finally:
        server.stop()
