"""HTTP/1.1 connections: h11 parses, this module bounds what a client can make it hold.

Every connection, from its first byte, is under a deadline: a whole request (line, headers
and body) within ``request_timeout`` of connecting or of the previous response, else 408 (or,
for a client that sent nothing, a quiet close). The request head is capped at
``max_request_head_bytes`` (414 for the line, 431 for the headers). One request is handled at
a time: a pipelined one waits, unread, until the response before it is complete. Reading
stops while the app has not taken the body received so far, and while the transport holds
more than ``write_buffer_bytes`` for a client that does not read (``Flow``), so no client can
make the server buffer replies it never collects. A WebSocket upgrade is handed, with the
transport, to ``WebSocketProtocol``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import h11
from uvicorn._types import HTTPScope
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from ..protocol import ErrorCode
from .context import ServerContext, split_target
from .cycle import RequestCycle, simple_response
from .flow import BODY, NEXT_REQUEST, Flow
from .handshake import is_websocket_upgrade
from .sockets import SocketEvent, SocketKind
from .websocket import WebSocketProtocol

__all__ = ["HTTPProtocol"]

logger = logging.getLogger("mudgate.server")

_REFUSALS = {
    400: (ErrorCode.BAD_REQUEST, SocketEvent.MALFORMED),
    414: (ErrorCode.URI_TOO_LONG, SocketEvent.HEAD_TOO_LARGE),
    431: (ErrorCode.HEADERS_TOO_LARGE, SocketEvent.HEAD_TOO_LARGE),
}


def _unservable(request: h11.Request) -> str | None:
    """Why ``request`` is refused (400, and the connection closed) before anything reads it,
    or None. h11 parses HTTP/1.0 and lets Transfer-Encoding win over Content-Length; a server
    that answers such a request and reads on serves whatever a proxy in front of it took for
    the body (request smuggling, RFC 9112 section 6.1)."""
    if request.http_version != b"1.1":
        return "mudgate speaks HTTP/1.1 only (behind nginx: proxy_http_version 1.1)"
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return "both Content-Length and Transfer-Encoding: the body's length is ambiguous"
    if request.method != b"GET" and is_websocket_upgrade(request):
        return "a WebSocket handshake is a GET request (RFC 6455)"
    return None


class HTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection, until it closes or is upgraded to a WebSocket."""

    __slots__ = (
        "_client",
        "_context",
        "_cycle",
        "_flow",
        "_h11",
        "_keep_alive_idle",
        "_line_complete",
        "_received",
        "_scheme",
        "_server",
        "_upgraded",
        "close_after_response",
    )

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=context.limits.max_request_head_bytes
        )
        self._flow: Flow | None = None
        self._client: tuple[str, int] | None = None
        self._server: tuple[str, int | None] | None = None
        self._scheme = "http"
        self._cycle: RequestCycle | None = None
        self._keep_alive_idle = False
        self._upgraded = False
        self._received = 0  # bytes of the current request (and any after it) received
        self._line_complete = False  # whether its request line has ended
        self.close_after_response = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        transport = cast(asyncio.Transport, transport)
        context = self._context
        if not context.sockets.open(transport):
            # The table is full of requests and players: this one is refused at once.
            transport.abort()
            return
        transport.set_write_buffer_limits(high=context.limits.write_buffer_bytes)
        self._flow = Flow(transport, context.sockets, context.loop, context.limits.close_timeout)
        context.state.connections.add(self)  # type: ignore[arg-type]
        self._client = get_remote_addr(transport)
        self._server = get_local_addr(transport)
        self._scheme = "https" if is_ssl(transport) else "http"
        self._flow.arm(context.limits.request_timeout, self._request_timed_out)

    def data_received(self, data: bytes) -> None:
        flow = self._flow
        assert flow is not None
        if flow.closing:
            flow.linger(data)
            return
        if self._keep_alive_idle:
            # The next request has begun: it gets request_timeout to arrive whole.
            self._keep_alive_idle = False
            flow.arm(self._context.limits.request_timeout, self._request_timed_out)
        received = self._received
        self._received += len(data)
        if not self._line_complete and not self._check_line(data, received):
            return
        self._h11.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool:
        # The client is gone (browsers and HTTP clients do not half-close a connection they
        # still read): the transport closes, and a response in progress (an SSE stream) ends
        # at once rather than at its next write.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._flow is None or self._upgraded:
            return  # refused on arrival, or a WebSocket's now
        self._flow.lost()
        self._context.state.connections.discard(self)
        if self._cycle is not None:
            self._cycle.disconnected()

    def pause_writing(self) -> None:
        assert self._flow is not None
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        assert self._flow is not None
        self._flow.resume_writing()

    # uvicorn's shutdown

    def shutdown(self) -> None:
        """Close now if idle, else once the response in progress is complete."""
        self.close_after_response = True
        if self._cycle is None and self._flow is not None:
            self._flow.close(linger=False)

    # The request

    def _check_line(self, data: bytes, offset: int) -> bool:
        """Refuse (414) a request line over the head's cap before h11 holds it; ``data``
        starts ``offset`` bytes into the request."""
        end = data.find(b"\n")
        self._line_complete = end >= 0
        if offset + (end if end >= 0 else len(data)) <= self._context.limits.max_request_head_bytes:
            return True
        self._refuse(414, "the request line is too long")
        return False

    def _handle_events(self) -> None:
        flow = self._flow
        assert flow is not None
        while not self._upgraded and not flow.closing:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                self._refuse(error.error_status_hint, str(error))
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                # The next request waits, unread, for the current response.
                flow.pause(NEXT_REQUEST)
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                assert self._cycle is not None
                # Held for the app up to the size of a write buffer, then reading stops.
                if self._cycle.body_received(event.data) > self._context.limits.write_buffer_bytes:
                    flow.pause(BODY)
            elif isinstance(event, h11.EndOfMessage):
                flow.cancel_timer()  # the request is whole
                self._context.sockets.mark(flow.transport, SocketKind.HTTP)
                assert self._cycle is not None
                self._cycle.body_received(b"", more=False)

    def _head_bytes(self) -> int:
        """The size of the request head h11 has taken, or holds while it is incomplete."""
        if self._h11.their_state is h11.IDLE:
            return self._received
        return self._received - len(self._h11.trailing_data[0])

    def _start(self, request: h11.Request) -> None:
        flow = self._flow
        assert flow is not None
        # h11 caps a head that arrives in pieces; one that arrives whole is measured here.
        if self._head_bytes() > self._context.limits.max_request_head_bytes:
            self._refuse(431, "the request headers are too large")
            return
        if (refused := _unservable(request)) is not None:
            self._refuse(400, refused)
            return
        if is_websocket_upgrade(request):
            self._context.sockets.mark(flow.transport, SocketKind.HTTP)
            self._upgrade(request)
            return
        # Until its body has arrived, a request is as evictable as a socket that sent nothing.
        self._context.sockets.mark(flow.transport, SocketKind.RECEIVING)
        try:
            scope = self._scope(request)
        except ValueError as error:
            self._refuse(400, str(error))
            return
        self._cycle = RequestCycle(self, flow, self._context, scope, self._h11)
        task = self._context.loop.create_task(self._cycle.run())
        self._context.state.tasks.add(task)
        task.add_done_callback(self._context.state.tasks.discard)

    def _scope(self, request: h11.Request) -> HTTPScope:
        root_path = self._context.root_path
        path, raw_path, query = split_target(root_path, request.target)
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "server": self._server,
            "client": self._client,
            "scheme": self._scheme,
            "method": request.method.decode("ascii"),
            "root_path": root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": list(request.headers),
            "state": self._context.app_state.copy(),
        }

    def _upgrade(self, request: h11.Request) -> None:
        """Hand the transport, its flow control and whatever the client sent after its
        handshake to a WebSocket protocol."""
        flow = self._flow
        assert flow is not None
        trailing, _ = self._h11.trailing_data
        self._upgraded = True
        self._context.state.connections.discard(self)
        websocket = WebSocketProtocol(self._context, flow, self._client, self._server)
        flow.transport.set_protocol(websocket)
        websocket.handshake(request, trailing)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer (400, 414 or 431) a request that cannot be served, and close."""
        assert self._flow is not None
        if status != 414 and self._head_bytes() > self._context.limits.max_request_head_bytes:
            status, reason = 431, "the request headers are too large"
        code, event = _REFUSALS.get(status, _REFUSALS[400])
        self._context.sockets.count(event)
        logger.info("request refused", extra={"status": status, "reason": reason})
        cycle = self._cycle
        if cycle is None or not cycle.response_started:
            self._flow.write(simple_response(self._context, status, code, reason))
        if cycle is not None:
            cycle.disconnected()
        self._flow.close()

    # Deadlines

    def _request_timed_out(self) -> None:
        """The request did not arrive whole in time: 408, or a quiet close for a client that
        sent nothing (nobody would read an answer)."""
        assert self._flow is not None
        self._context.sockets.count(SocketEvent.TIMED_OUT)
        cycle = self._cycle
        if self._received and (cycle is None or not cycle.response_started):
            self._flow.write(
                simple_response(
                    self._context,
                    408,
                    ErrorCode.REQUEST_TIMEOUT,
                    f"the request did not arrive within {self._context.limits.request_timeout} s",
                )
            )
        if cycle is not None:
            cycle.disconnected()
        self._flow.close(linger=bool(self._received))

    def _keep_alive_expired(self) -> None:
        assert self._flow is not None
        self._flow.close(linger=False)

    # The response

    def response_complete(self, *, close: bool = False) -> None:
        """The response is written: wait for the next request, or close."""
        flow = self._flow
        assert flow is not None
        self._cycle = None
        self.close_after_response |= close
        if flow.closing:
            return
        if self.close_after_response or self._h11.our_state is not h11.DONE:
            flow.close()
        elif self._h11.their_state is not h11.DONE:
            # Answered before the body arrived (a 413): closing reads and drops the rest,
            # so the kernel does not reset the connection before the client reads the answer.
            flow.close()
        else:
            self._next_request()

    def _next_request(self) -> None:
        flow = self._flow
        assert flow is not None
        self._h11.start_next_cycle()
        self._context.sockets.mark(flow.transport, SocketKind.WAITING)
        trailing, _ = self._h11.trailing_data  # the next request's beginning, if it came
        self._received = len(trailing)
        self._line_complete = False
        self._keep_alive_idle = not trailing
        if self._keep_alive_idle:
            flow.arm(self._context.limits.keep_alive_timeout, self._keep_alive_expired)
        else:
            flow.arm(self._context.limits.request_timeout, self._request_timed_out)
            if not self._check_line(trailing, 0):
                return
        flow.resume(NEXT_REQUEST)
        self._handle_events()  # a pipelined request may be here already
