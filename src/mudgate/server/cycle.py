"""One HTTP request and its response: the ASGI ``receive`` and ``send`` of one app call.

``HTTPProtocol`` feeds the request body in as h11 parses it (reading stops while the app has
not taken it) and hears when the response is complete; writes go through the transport's
``Flow``, waiting while the client is not reading.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Protocol

import h11
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, HTTPScope

from ..protocol import ErrorCode, error_body
from .context import ServerContext, access_logger, access_target
from .flow import BODY, Flow

__all__ = ["RequestCycle", "Responder", "simple_response"]

logger = logging.getLogger("mudgate.server")


class Responder(Protocol):
    """What a cycle tells the connection it belongs to."""

    close_after_response: bool

    def response_complete(self, *, close: bool = False) -> None: ...


def simple_response(context: ServerContext, status: int, code: ErrorCode, message: str) -> bytes:
    """A whole ``Connection: close`` response in mudgate's error shape, for the protocol
    layer's own answers (written without h11: the request may not even be HTTP)."""
    body = error_body(code, message)
    head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    head += [name + b": " + value + b"\r\n" for name, value in context.default_headers]
    head.append(
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
    )
    return b"".join(head) + body


class RequestCycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of one app call."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_connection",
        "_context",
        "_disconnected",
        "_flow",
        "_more_body",
        "_protocol",
        "_request_read",
        "_waiter",
        "response_complete",
        "response_started",
        "scope",
    )

    def __init__(
        self,
        protocol: Responder,
        flow: Flow,
        context: ServerContext,
        scope: HTTPScope,
        connection: h11.Connection,
    ) -> None:
        self._protocol = protocol
        self._flow = flow
        self._context = context
        self._connection = connection
        self.scope = scope
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._more_body = True
        self._request_read = False
        self._disconnected = False
        self._waiter: asyncio.Future[None] | None = None
        self.response_started = False
        self.response_complete = False

    # What the protocol tells the cycle

    def body_received(self, data: bytes, *, more: bool = True) -> int:
        """Hold a chunk of the body for the app; returns the bytes held."""
        if data:
            self._body.append(data)
            self._body_bytes += len(data)
        self._more_body = more
        self._wake()
        return self._body_bytes

    def disconnected(self) -> None:
        self._disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._waiter is None:
            self._waiter = self._context.loop.create_future()
        await self._waiter

    # Running the app

    async def run(self) -> None:
        scope = self.scope
        try:
            await self._context.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            # Shutdown's last resort, after its grace period: nothing more can be written.
            self._flow.abort()
            raise
        except Exception:
            logger.exception(
                "error in the app", extra={"method": scope["method"], "path": scope["path"]}
            )
            self._fail()
        else:
            if not self.response_started and not self._disconnected:
                # (A client that left before its answer was written is no error of the app's.)
                logger.error(
                    "the app returned without a response",
                    extra={"method": scope["method"], "path": scope["path"]},
                )
                self._fail()
            elif not self.response_complete:
                self._flow.abort()

    def _fail(self) -> None:
        """A 500 in mudgate's error shape if nothing was sent yet; else the end of the
        connection (a truncated response rather than a wrong one)."""
        if self.response_started or self._disconnected:
            self._flow.abort()
            return
        self.response_started = self.response_complete = True
        self._flow.write(
            simple_response(self._context, 500, ErrorCode.INTERNAL, "the server failed")
        )
        self._protocol.response_complete(close=True)

    # ASGI

    async def receive(self) -> ASGIReceiveEvent:
        if not self._request_read:
            if self._connection.they_are_waiting_for_100_continue and not self._disconnected:
                self._send(h11.InformationalResponse(status_code=100, headers=[]))
            while not self._body and self._more_body and not self._disconnected:
                self._flow.resume(BODY)
                await self._wait()
            if not self._disconnected:
                body = b"".join(self._body)
                self._body.clear()
                self._body_bytes = 0
                self._request_read = not self._more_body
                self._flow.resume(BODY)
                return {"type": "http.request", "body": body, "more_body": self._more_body}
        # All read: what is left to hear is that the client went or the response is done.
        while not self._disconnected and not self.response_complete:
            await self._wait()
        return {"type": "http.disconnect"}

    async def send(self, message: ASGISendEvent) -> None:
        if self._flow.write_paused:
            await self._flow.drain()
        if self._disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {message['type']!r}")
            self.response_started = True
            status = message["status"]
            headers = [*self._context.default_headers, *message.get("headers", ())]
            if self._protocol.close_after_response:
                headers.append((b"connection", b"close"))
            self._log(status)
            self._send(h11.Response(status_code=status, headers=headers, reason=b""))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"expected 'http.response.body', got {message['type']!r}")
            body = message.get("body", b"")
            if body and self.scope["method"] != "HEAD":
                self._send(h11.Data(data=body))
            if not message.get("more_body", False):
                self._send(h11.EndOfMessage())
                self.response_complete = True
                self._wake()
                self._protocol.response_complete()
        else:
            raise RuntimeError(f"{message['type']!r} sent after the response was complete")

    def _send(self, event: h11.Event) -> None:
        try:
            data = self._connection.send(event)
        except h11.LocalProtocolError as error:
            raise RuntimeError(f"invalid response: {error}") from None
        self._flow.write(data or b"")

    def _log(self, status: int) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        scope = self.scope
        client, target = access_target(scope)
        access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            client,
            scope["method"],
            target,
            scope["http_version"],
            status,
        )
