"""Player tokens and the admin token."""

from __future__ import annotations

import jwt
import pytest

from mudgate.auth import Authenticator, Credentials, Identity, TokenError, admin_token_matches

from .conftest import SECRET_KEY, FakeClock


def test_a_token_names_its_player(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, 60, clock=clock)
    assert auth.verify(auth.issue("alice")) == Identity("alice", guest=False)


def test_tokens_expire(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, 60, guest_token_ttl_seconds=10, clock=clock)
    token = auth.issue("alice")
    _, guest = auth.issue_guest()
    clock.advance(10)
    with pytest.raises(TokenError, match="expired"):
        auth.verify(guest)
    assert auth.verify(token).player_id == "alice"
    clock.advance(50)
    with pytest.raises(TokenError, match="expired"):
        auth.verify(token)


def test_guest_tokens_are_marked() -> None:
    auth = Authenticator(SECRET_KEY, 60)
    player_id, token = auth.issue_guest()
    assert player_id.startswith("guest-")
    assert auth.verify(token) == Identity(player_id, guest=True)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-jwt",
        jwt.encode({"sub": "alice", "exp": 2**40, "iss": "mudgate"}, "k" * 40, algorithm="HS256"),
        jwt.encode({"sub": "alice", "exp": 2**40}, SECRET_KEY, algorithm="HS256"),
        jwt.encode({"sub": "bad name!", "exp": 2**40, "iss": "mudgate"}, SECRET_KEY),
        jwt.encode({"sub": 5, "exp": 2**40, "iss": "mudgate"}, SECRET_KEY),
        jwt.encode({"sub": "alice", "exp": 2**40, "iss": "mudgate"}, None, algorithm="none"),
    ],
    ids=[
        "none",
        "empty",
        "garbage",
        "forged",
        "no-issuer",
        "bad-subject",
        "int-subject",
        "alg-none",
    ],
)
def test_bad_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(TokenError):
        Authenticator(SECRET_KEY, 60).verify(token)


def test_issuing_refuses_invalid_player_ids() -> None:
    with pytest.raises(ValueError, match="invalid player id"):
        Authenticator(SECRET_KEY, 60).issue("../admin")


def test_admin_tokens_compare_exactly() -> None:
    assert admin_token_matches("secret", "secret")
    assert not admin_token_matches("secret2", "secret")
    assert not admin_token_matches(None, "secret")


async def test_a_sync_hook_decides_first_and_none_defers_to_the_token(clock: FakeClock) -> None:
    def hook(credentials: Credentials) -> str | None:
        if credentials.headers.get("x-game-user") == "banned":
            raise TokenError("banned")
        return credentials.headers.get("x-game-user")

    auth = Authenticator(SECRET_KEY, 60, clock=clock, authenticate=hook)
    by_game = await auth.identify(Credentials(None, {}, {"x-game-user": "dora"}))
    assert by_game == Identity("dora", guest=False)
    by_token = await auth.identify(Credentials(auth.issue("erin")))
    assert by_token.player_id == "erin"
    with pytest.raises(TokenError, match="banned"):
        await auth.identify(Credentials(auth.issue("erin"), {}, {"x-game-user": "banned"}))
    with pytest.raises(TokenError, match="missing token"):
        await auth.identify(Credentials(None))
