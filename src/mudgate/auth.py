"""Player tokens (signed, expiring JWTs) and the admin token.

A player token names the player in ``sub`` and expires; ``mudgate token PLAYER`` prints one and
``POST /auth/guest`` hands out guest ones. Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from .protocol import NAME_PATTERN

__all__ = ["Authenticator", "Identity", "TokenError", "admin_token_matches", "is_valid_player_id"]

_ALGORITHM = "HS256"
_ISSUER = "mudgate"
_player_id = re.compile(NAME_PATTERN)


class TokenError(Exception):
    """A token that does not identify a player: missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Identity:
    player_id: str
    guest: bool


def is_valid_player_id(player_id: str) -> bool:
    return _player_id.fullmatch(player_id) is not None


class Authenticator:
    """Issues and verifies player tokens signed with ``secret_key``."""

    def __init__(
        self,
        secret_key: str,
        token_ttl_seconds: float,
        *,
        guest_token_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret_key = secret_key
        self.token_ttl_seconds = token_ttl_seconds
        self.guest_token_ttl_seconds = guest_token_ttl_seconds or token_ttl_seconds
        self._clock = clock

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
        """The identity a token carries; raises TokenError saying what is wrong with it."""
        if not token:
            raise TokenError("missing token")
        try:
            claims = jwt.decode(
                token,
                self._secret_key,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["sub", "exp", "iss"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as error:
            raise TokenError(f"invalid token: {error}") from None
        # Expiry is checked against the injected clock, not PyJWT's own.
        expires_at = claims["exp"]
        if not isinstance(expires_at, int | float) or expires_at <= self._clock():
            raise TokenError("token expired")
        player_id = claims["sub"]
        if not isinstance(player_id, str) or not is_valid_player_id(player_id):
            raise TokenError("invalid token: bad subject")
        return Identity(player_id, bool(claims.get("guest", False)))


def admin_token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented admin token with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
