"""Tokens signed with the gateway's own key whose times claim more than the gateway allows:
each is refused with 401 and a message that says why, on ``/ws``, ``/events`` and
``POST /commands`` of a real ``mudgate serve`` whose TTLs are an hour."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ..conftest import SECRET_KEY
from ..e2e.clients import Player
from .gateway import Gateway

DAY = 86400
YEAR = 365 * DAY


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    log = tmp_path_factory.mktemp("tokens") / "gateway.log"
    running = Gateway(log, token_ttl=3600, guest_token_ttl=3600).start()
    yield running
    running.stop()


def forged(**claims: object) -> str:
    """Correctly signed (the key leaked, or a careless signing service): only the times lie."""
    return jwt.encode({"sub": "mallory", "iss": "mudgate", **claims}, SECRET_KEY)


def hostile_tokens() -> dict[str, tuple[str, str]]:
    """Each token, and what the refusal must say."""
    now = int(time.time())
    return {
        "issued-30-days-ago": (
            forged(iat=now - 30 * DAY, exp=now + YEAR),
            "token too old: issued more than 3600 s ago",
        ),
        "no-iat-valid-for-10-years": (
            forged(exp=now + 10 * YEAR),
            "invalid token: no iat claim",
        ),
        "guest-valid-for-a-year": (
            forged(iat=now, exp=now + YEAR, guest=True),
            "guest token lifetime too long: exp is 31536000 s after iat, over the 3600 s",
        ),
        "player-valid-for-a-day": (
            forged(iat=now, exp=now + DAY),
            "token lifetime too long: exp is 86400 s after iat, over the 3600 s",
        ),
        "issued-tomorrow": (
            forged(iat=now + DAY, exp=now + DAY + 3600),
            "token issued in the future",
        ),
    }


CASES = list(hostile_tokens())


def refusal(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["code"] == "unauthorized"
    return str(error["message"])


@pytest.mark.parametrize("case", CASES)
async def test_a_websocket_with_a_token_past_the_ttl_is_refused_at_the_handshake(
    server: Gateway, case: str
) -> None:
    token, why = hostile_tokens()[case]
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{server.port}/ws?token={token}")
    assert refused.value.response.status_code == 401
    assert why in refusal(refused.value.response.body or b"{}")


@pytest.mark.parametrize("case", CASES)
async def test_events_and_commands_with_a_token_past_the_ttl_answer_401(
    server: Gateway, case: str
) -> None:
    token, why = hostile_tokens()[case]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        events = await http.get("/events", params={"token": token})
        command = await http.post(
            "/commands",
            json={"op": "say", "text": "let me in"},
            headers={"Authorization": f"Bearer {token}"},
        )
    for response in (events, command):
        assert response.status_code == 401, response.text
        assert why in refusal(response.content)


async def test_a_token_within_the_ttl_still_gets_in(server: Gateway) -> None:
    now = int(time.time())
    async with await Player.connect(
        f"ws://127.0.0.1:{server.port}/ws?token={forged(iat=now - 60, exp=now + 3000)}"
    ) as mallory:
        assert (await mallory.next("welcome"))["player"] == "mallory"
