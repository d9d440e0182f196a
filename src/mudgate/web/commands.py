"""``POST /commands``: how an SSE client sends a frame (its replies arrive on its stream).

The body is read here, capped at ``MUDGATE_MAX_MESSAGE_BYTES`` before anything parses it, and
the frame runs through the same command registry as a WebSocket's.
"""

# No `from __future__ import annotations`: FastAPI resolves the route's dependencies at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from ..auth import Authenticator, Credentials, Identity, TokenError
from ..commands import CommandRegistry, answer_error
from ..hub import Hub
from ..protocol import ErrorCode
from ..settings import Settings
from .clients import remote_address
from .errors import APIError

__all__ = ["commands_router"]


# POST /commands reads its body itself (to cap it before parsing), so FastAPI cannot infer it.
COMMAND_BODY = {
    "required": True,
    "description": "One protocol frame (docs/protocol.md), at most MUDGATE_MAX_MESSAGE_BYTES.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["op"],
                "properties": {
                    "op": {"type": "string", "maxLength": 64},
                    "id": {"oneOf": [{"type": "string", "maxLength": 64}, {"type": "integer"}]},
                },
                "additionalProperties": True,
            },
            "example": {"op": "say", "text": "hello", "id": 1},
        }
    },
}


class CommandAccepted(BaseModel):
    status: str = "accepted"


def commands_router(
    settings: Settings, hub: Hub, commands: CommandRegistry, authenticator: Authenticator
) -> APIRouter:
    """``POST /commands``, answered 202 once the frame has run; what it causes arrives as
    events on the player's open ``/events`` (or ``/ws``) connection."""
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False, description="A player token.")

    async def identify(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Identity:
        presented = Credentials(
            credentials.credentials if credentials else None,
            request.cookies,
            request.headers,
        )
        try:
            return await authenticator.identify(presented)
        except TokenError as error:
            raise APIError(401, ErrorCode.UNAUTHORIZED, str(error)) from None

    @router.post(
        "/commands",
        status_code=202,
        response_model=CommandAccepted,
        summary="Send a command frame as an SSE client",
        responses={400: {}, 401: {}, 409: {}, 413: {}, 429: {}, 500: {}},
        openapi_extra={"requestBody": COMMAND_BODY},
    )
    async def post_command(
        request: Request, identity: Annotated[Identity, Depends(identify)]
    ) -> CommandAccepted:
        """The body is one protocol frame, e.g. ``{"op": "say", "text": "hi"}``; what it causes
        arrives as events on the player's open ``/events`` (or ``/ws``) connection."""
        player_id = identity.player_id
        own = hub.connections_of(player_id)
        if not own:
            raise APIError(409, ErrorCode.NOT_CONNECTED, "open /events before sending commands")
        conn = own[-1]  # taken now: the list may change while the body arrives
        remote = remote_address(request.scope)
        if not hub.begin_command(player_id, remote):
            raise APIError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many commands under way at once from this player or address: "
                "wait for their answers",
                retry_after=1,
            )
        try:
            body = await _read_body(request, settings.max_message_bytes)
            conn.received()
            error = await commands.dispatch(hub, conn, body)
        finally:
            hub.end_command(player_id, remote)
        if error is not None:
            answer_error(conn, error, reply=False)
            raise APIError.of(error)
        return CommandAccepted()

    return router


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) to hold more than ``limit`` bytes of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, ErrorCode.FRAME_TOO_BIG, f"frames are at most {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, ErrorCode.FRAME_TOO_BIG, f"frames are at most {limit} bytes")
    except ClientDisconnect:
        # Gone before its body was whole (a slow body's author, say): nobody reads an answer,
        # and an attacker who does it on purpose must not fill the log with tracebacks.
        raise APIError(
            400, ErrorCode.BAD_REQUEST, "the client left before its body arrived"
        ) from None
    return bytes(body)
