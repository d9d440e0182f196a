"""Who a player is: mudgate's player tokens (signed, expiring JWTs), a game's own
``authenticate`` hook, and the admin token.

A player token is an HS256 JWT signed with ``MUDGATE_SECRET_KEY`` whose claims are ``sub``
(the player id), ``iss`` (``"mudgate"``), ``iat`` and ``exp`` (seconds since the epoch) and
``guest`` (true for ``POST /auth/guest``'s). ``mudgate token PLAYER`` and ``issue_token`` make
one. The TTL is the gateway's, not the token's: a token is refused once older than its TTL
(``MUDGATE_TOKEN_TTL``, or ``MUDGATE_GUEST_TOKEN_TTL`` for a guest's) counted from ``iat``,
whatever its ``exp`` says. A game with accounts of its own passes ``authenticate``: given the
request's ``Credentials``, it names the player, declines (None: mudgate's token is checked
instead) or refuses (raises ``TokenError``). Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import hmac
import inspect
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jwt

from .protocol import NAME_PATTERN

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "AuthenticateHook",
    "Authenticator",
    "Credentials",
    "Identity",
    "TokenError",
    "admin_token_matches",
    "is_valid_player_id",
    "issue_token",
]

_ALGORITHM = "HS256"
_ISSUER = "mudgate"
_player_id = re.compile(NAME_PATTERN)


class TokenError(Exception):
    """Credentials that do not identify a player: a token missing, malformed, forged or
    expired, or a refusal by the game's ``authenticate`` hook (its message is the client's)."""


@dataclass(frozen=True, slots=True)
class Identity:
    player_id: str
    guest: bool


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a connecting client presented: the token (``?token=`` or a bearer header), its
    cookies, and its headers (names in lower case); over telnet, the name and password typed
    at the login prompts (the password only when the game's hook takes credentials)."""

    token: str | None
    cookies: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    password: str | None = field(default=None, repr=False)


# A game's own sign-in: the player id, None to let mudgate's token decide, or TokenError.
AuthenticateHook = Callable[[Credentials], "str | Awaitable[str | None] | None"]


def is_valid_player_id(player_id: str) -> bool:
    return _player_id.fullmatch(player_id) is not None


class Authenticator:
    """Issues and verifies player tokens signed with ``secret_key``, and asks the game's
    ``authenticate`` hook first when there is one.

    ``token_ttl_seconds`` (``guest_token_ttl_seconds`` for guests, default the same) is both
    the lifetime of the tokens it issues and the most any token it verifies may live, counted
    from its ``iat``; ``clock_skew_seconds`` (``MUDGATE_TOKEN_CLOCK_SKEW``, default 60) is how
    far ahead of ``clock`` (seconds since the epoch) an ``iat`` may be: the clock of a service
    that signs tokens for a game (or of another node) runs a little ahead now and then; further
    ahead, a token is refused rather than trusted to live longer than its TTL.
    """

    def __init__(
        self,
        secret_key: str,
        token_ttl_seconds: float,
        *,
        guest_token_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        authenticate: AuthenticateHook | None = None,
        clock_skew_seconds: float = 60.0,
    ) -> None:
        self._secret_key = secret_key
        self.token_ttl_seconds = token_ttl_seconds
        self.guest_token_ttl_seconds = guest_token_ttl_seconds or token_ttl_seconds
        self.clock_skew_seconds = clock_skew_seconds
        self._clock = clock
        self._authenticate = authenticate

    @property
    def asks_game(self) -> bool:
        """Whether the game's hook decides first (and so needs cookies and headers)."""
        return self._authenticate is not None

    async def identify(self, credentials: Credentials) -> Identity:
        """The player these credentials belong to: the game's hook decides first (if any),
        then mudgate's token. Raises TokenError saying why not.

        A player the hook names is admitted without mudgate's checks of the token: the hook
        vouches for what it accepts (a game's own older tokens without ``iat``, say).
        """
        if self._authenticate is not None:
            player_id = self._authenticate(credentials)
            if inspect.isawaitable(player_id):
                player_id = await player_id
            if player_id is not None:
                if not isinstance(player_id, str) or not is_valid_player_id(player_id):
                    raise TokenError("the game named an invalid player id")
                return Identity(player_id, guest=False)
        return self.verify(credentials.token)

    def issue(self, player_id: str, *, guest: bool = False) -> str:
        """A token for ``player_id``, valid for the player or guest token TTL."""
        if not is_valid_player_id(player_id):
            raise ValueError(f"invalid player id {player_id!r}: letters, digits, _ . - (max 32)")
        now = int(self._clock())
        ttl = self.guest_token_ttl_seconds if guest else self.token_ttl_seconds
        claims = {
            "sub": player_id,
            "iss": _ISSUER,
            "iat": now,
            "exp": now + int(ttl),
            "guest": guest,
        }
        return jwt.encode(claims, self._secret_key, algorithm=_ALGORITHM)

    def issue_guest(self) -> tuple[str, str]:
        """A fresh guest player id and its token."""
        player_id = f"guest-{secrets.token_hex(4)}"
        return player_id, self.issue(player_id, guest=True)

    def verify(self, token: str | None) -> Identity:
        """The identity a token carries; raises TokenError saying what is wrong with it.

        Besides the signature, the issuer and the subject, the times are the gateway's to
        judge, against the injected clock: a token must say when it was issued (``iat``), not
        in the future (beyond ``clock_skew_seconds``), and is refused once expired, once older
        than its TTL, or when it claims a lifetime (``exp - iat``) longer than its TTL, so a
        token signed to last a year is refused at once rather than honoured for a day.
        """
        if not token:
            raise TokenError("missing token")
        try:
            claims = jwt.decode(
                token,
                self._secret_key,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                # exp and iat are checked below, against the injected clock, not PyJWT's own.
                options={
                    "require": ["sub", "exp", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as error:
            raise TokenError(f"invalid token: {error}") from None
        player_id = claims["sub"]
        if not isinstance(player_id, str) or not is_valid_player_id(player_id):
            raise TokenError("invalid token: bad subject")
        guest = bool(claims.get("guest", False))
        self._check_times(claims, guest)
        return Identity(player_id, guest)

    def _check_times(self, claims: Mapping[str, object], guest: bool) -> None:
        if "iat" not in claims:
            raise TokenError("invalid token: no iat claim (when it was issued)")
        issued_at = _seconds_since_epoch(claims, "iat")
        expires_at = _seconds_since_epoch(claims, "exp")
        now = self._clock()
        ahead = issued_at - now
        if ahead > self.clock_skew_seconds:
            raise TokenError(
                f"token issued in the future: iat is {ahead:.0f} s ahead of the server's clock "
                f"(at most {self.clock_skew_seconds:.0f} s allowed)"
            )
        if expires_at <= now:
            raise TokenError("token expired")
        kind = "guest token" if guest else "token"
        ttl = self.guest_token_ttl_seconds if guest else self.token_ttl_seconds
        if now - issued_at > ttl:
            raise TokenError(f"{kind} too old: issued more than {ttl:.0f} s ago")
        lifetime = expires_at - issued_at
        if lifetime > ttl:
            raise TokenError(
                f"{kind} lifetime too long: exp is {lifetime:.0f} s after iat, "
                f"over the {ttl:.0f} s this server allows"
            )


def _seconds_since_epoch(claims: Mapping[str, object], name: str) -> float:
    """A time claim as a finite number of seconds (a NaN would pass every comparison)."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(f"invalid token: {name} is not a time in seconds since the epoch")
    return float(value)


def issue_token(settings: Settings, player_id: str, ttl: float | None = None) -> str:
    """A player token for ``player_id`` signed with ``settings.secret_key``, valid for ``ttl``
    seconds (default and at most ``MUDGATE_TOKEN_TTL``: the gateway refuses a token that
    claims to live longer): what a game with its own accounts hands its players after they
    sign in, for ``?token=`` on ``/ws`` and ``/events``."""
    if settings.secret_key is None:
        raise ValueError(
            "MUDGATE_SECRET_KEY is not set: the gateway would not accept a token signed "
            "with anything else; set it (32+ characters) for both"
        )
    if ttl is not None and ttl > settings.token_ttl:
        raise ValueError(
            f"ttl {ttl:g} s is over MUDGATE_TOKEN_TTL ({settings.token_ttl:g} s): the gateway "
            "would refuse the token; raise MUDGATE_TOKEN_TTL for both, or give a shorter ttl"
        )
    authenticator = Authenticator(
        settings.secret_key.get_secret_value(),
        settings.token_ttl if ttl is None else ttl,
    )
    return authenticator.issue(player_id)


def admin_token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented admin token with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
