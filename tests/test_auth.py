"""Player tokens and the admin token."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from mudgate import Gateway, create_app
from mudgate.auth import (
    Authenticator,
    Credentials,
    Identity,
    TokenError,
    admin_token_matches,
    issue_token,
)

from .conftest import SECRET_KEY, FakeClock, make_settings


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


# The TTL is the gateway's: a correctly signed token that claims more is refused, saying why.

DAY = 86400
YEAR = 365 * DAY


def signed(**claims: object) -> str:
    """A token signed with the gateway's own key: only its claims can be wrong."""
    return jwt.encode({"sub": "mallory", "iss": "mudgate", **claims}, SECRET_KEY)


def test_a_token_issued_longer_ago_than_the_ttl_is_refused_whatever_its_exp(
    clock: FakeClock,
) -> None:
    clock.advance(60 * DAY)
    auth = Authenticator(SECRET_KEY, 3600, clock=clock)
    token = signed(iat=clock.now - 30 * DAY, exp=clock.now + YEAR)
    with pytest.raises(TokenError, match="token too old: issued more than 3600 s ago"):
        auth.verify(token)


def test_a_token_without_iat_is_refused(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, 3600, clock=clock)
    with pytest.raises(TokenError, match="no iat claim"):
        auth.verify(signed(exp=clock.now + 10 * YEAR))


async def test_a_token_without_iat_passes_when_the_games_hook_vouches_for_it(
    clock: FakeClock,
) -> None:
    legacy = signed(exp=clock.now + 10 * YEAR)

    def hook(credentials: Credentials) -> str | None:
        # The game knows its own older tokens; anything else is mudgate's to check.
        return "mallory" if credentials.token == legacy else None

    auth = Authenticator(SECRET_KEY, 3600, clock=clock, authenticate=hook)
    assert await auth.identify(Credentials(legacy)) == Identity("mallory", guest=False)
    with pytest.raises(TokenError, match="no iat claim"):
        await auth.identify(Credentials(signed(exp=clock.now + YEAR)))


def test_a_token_claiming_a_lifetime_over_the_ttl_is_refused_at_once(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, 3600, clock=clock)
    token = signed(iat=clock.now, exp=clock.now + 3601)
    with pytest.raises(TokenError, match="token lifetime too long: exp is 3601 s after iat"):
        auth.verify(token)
    assert auth.verify(signed(iat=clock.now, exp=clock.now + 3600)).player_id == "mallory"


def test_a_guest_token_is_held_to_the_guest_ttl(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, DAY, guest_token_ttl_seconds=3600, clock=clock)
    a_year = signed(iat=clock.now, exp=clock.now + YEAR, guest=True)
    with pytest.raises(TokenError, match=r"guest token lifetime too long: .* over the 3600 s"):
        auth.verify(a_year)
    # The same lifetime without the guest mark is a player's, within the player TTL.
    assert not auth.verify(signed(iat=clock.now, exp=clock.now + 7200)).guest
    with pytest.raises(TokenError, match="guest token lifetime too long"):
        auth.verify(signed(iat=clock.now, exp=clock.now + 7200, guest=True))
    old_guest = signed(iat=clock.now - 7200, exp=clock.now + YEAR, guest=True)
    with pytest.raises(TokenError, match="guest token too old: issued more than 3600 s ago"):
        auth.verify(old_guest)


def test_an_iat_in_the_future_is_refused_beyond_the_clock_skew(clock: FakeClock) -> None:
    auth = Authenticator(SECRET_KEY, 3600, clock=clock, clock_skew_seconds=60)
    slightly_ahead = signed(iat=clock.now + 60, exp=clock.now + 3660)
    assert auth.verify(slightly_ahead).player_id == "mallory"
    far_ahead = signed(iat=clock.now + 3000, exp=clock.now + 3600)
    with pytest.raises(TokenError, match="token issued in the future: iat is 3000 s ahead"):
        auth.verify(far_ahead)


@pytest.mark.parametrize(("skew", "refused"), [(None, True), (300, False)], ids=["60", "300"])
async def test_the_gateway_allows_the_clock_skew_its_settings_give(
    skew: float | None, refused: bool
) -> None:
    # MUDGATE_TOKEN_CLOCK_SKEW (default 60 s) reaches the gateway's own Authenticator.
    settings = make_settings() if skew is None else make_settings(token_clock_skew=skew)
    now = time.time()
    token = signed(iat=now + 120, exp=now + 3600)
    transport = httpx.ASGITransport(app=create_app(Gateway(settings)))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.post(
            "/commands", content="{}", headers={"Authorization": f"Bearer {token}"}
        )
    error = response.json()["error"]
    if refused:
        assert response.status_code == 401
        assert "at most 60 s allowed" in error["message"]
    else:  # past the token check: this player has no stream open
        assert error["code"] == "not_connected"


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iat", "yesterday"), ("iat", True), ("iat", float("nan")), ("exp", float("nan"))],
)
def test_a_time_claim_that_is_not_a_finite_number_is_refused(
    clock: FakeClock, claim: str, value: object
) -> None:
    claims: dict[str, object] = {"iat": clock.now, "exp": clock.now + 60, claim: value}
    with pytest.raises(TokenError, match=f"invalid token: {claim} is not a time"):
        Authenticator(SECRET_KEY, 3600, clock=clock).verify(signed(**claims))


def test_issue_token_refuses_a_ttl_the_gateway_would_refuse() -> None:
    settings = make_settings(token_ttl=3600)
    with pytest.raises(ValueError, match="over MUDGATE_TOKEN_TTL"):
        issue_token(settings, "alice", ttl=7200)
    assert Authenticator(SECRET_KEY, 3600).verify(issue_token(settings, "alice", ttl=3600))
