"""The one shape of every HTTP error: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import math

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ..protocol import CommandError, ErrorCode, error_body

__all__ = ["APIError", "api_error_handler", "validation_error_handler"]


# The status of a command's error answered over HTTP (POST /commands); others are 400.
COMMAND_ERROR_STATUS = {ErrorCode.RATE_LIMITED: 429, ErrorCode.INTERNAL: 500}


class APIError(Exception):
    """An HTTP error with a machine-readable code; FastAPI renders it with ``api_error_handler``."""

    def __init__(
        self,
        status_code: int,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = headers or {}
        if status_code == 401:
            self.headers.setdefault("WWW-Authenticate", "Bearer")
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))

    @classmethod
    def of(cls, error: CommandError) -> APIError:
        """A command's error, answered over HTTP."""
        status = COMMAND_ERROR_STATUS.get(error.code, 400)
        return cls(status, error.code, error.message, retry_after=error.retry_after)


async def api_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, APIError)
    return Response(
        error_body(error.code, error.message, error.retry_after),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


async def validation_error_handler(request: Request, error: Exception) -> Response:
    """FastAPI's 422 in mudgate's error shape, naming each bad parameter."""
    assert isinstance(error, RequestValidationError)
    message = "; ".join(
        f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
        for detail in error.errors()
    )
    return Response(
        error_body(ErrorCode.INVALID_ARGS, message), status_code=422, media_type="application/json"
    )
