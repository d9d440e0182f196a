"""The one shape of every HTTP error: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import msgspec
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ..protocol import ErrorCode

__all__ = ["APIError", "api_error_handler", "error_body", "validation_error_handler"]


class APIError(Exception):
    """An HTTP error with a machine-readable code; FastAPI renders it with ``api_error_handler``."""

    def __init__(
        self,
        status_code: int,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}
        if status_code == 401:
            self.headers.setdefault("WWW-Authenticate", "Bearer")


def error_body(code: ErrorCode, message: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message}})


async def api_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, APIError)
    return Response(
        error_body(error.code, error.message),
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
