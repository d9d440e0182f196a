"""The admin bearer token, as a FastAPI dependency that logs every refusal and slows guessing:
past ``admin_failures_per_minute`` wrong tokens from one address, that address gets 429."""

# No `from __future__ import annotations`: FastAPI resolves the dependency's types at runtime.
import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import admin_token_matches
from ..bounded import SlidingWindowLimiter
from ..protocol import ErrorCode
from .clients import remote_address
from .errors import APIError

__all__ = ["admin_guard", "logger"]

logger = logging.getLogger("mudgate.admin")


def admin_guard(admin_token: str, failures: SlidingWindowLimiter) -> Callable[..., str]:
    """A dependency that lets only the admin token through (401 without one, 403 when wrong,
    429 to an address that ``failures`` says guessed too often) and returns the caller's
    address, for the log line every admin action writes."""
    bearer = HTTPBearer(auto_error=False, description="The admin token.")

    def admin(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        remote = remote_address(request.scope)
        action = f"{request.method} {request.url.path}"
        wait = failures.retry_after(remote)
        if wait > 0:
            logger.warning("admin %s from %s refused: too many wrong tokens", action, remote)
            raise APIError(
                429, ErrorCode.RATE_LIMITED, "too many wrong admin tokens", retry_after=wait
            )
        if credentials is None:
            logger.warning("admin %s from %s refused: no token", action, remote)
            raise APIError(401, ErrorCode.UNAUTHORIZED, "an admin bearer token is required")
        if not admin_token_matches(credentials.credentials, admin_token):
            failures.hit(remote)
            logger.warning("admin %s from %s refused: wrong token", action, remote)
            raise APIError(403, ErrorCode.FORBIDDEN, "wrong admin token")
        return remote

    return admin
