"""The WebSocket subprotocols that MUD web clients speak on ``/ws``, from mudstandards.org's
proposal (https://mudstandards.org/websocket/; docs/protocol.md says what each frame carries).

A client that offers ``gmcp.mudstandards.org`` in ``Sec-WebSocket-Protocol`` gets each event
as a BINARY frame of text with ANSI colour (``mudgate.render``) and TEXT frames of GMCP, and
sends typed lines in BINARY frames (``mudgate.server.telnet.lines``, as a telnet player types
them) and GMCP in TEXT frames; ``terminal.mudstandards.org`` is the same without GMCP. A client
that offers neither keeps mudgate's JSON protocol. What a player is sent is rendered once per
view for everyone who gets it (``Outgoing.view``), as for telnet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
from starlette.types import Receive

from ..commands import CommandRegistry, answer_error
from ..connection import Connection, ConnectionState
from ..hub import Hub
from ..protocol import (
    CloseCode,
    CommandError,
    ErrorCode,
    Outgoing,
    encode_event,
    websocket_binary_frame,
    websocket_text_frame,
)
from ..render import GMCP_EVENT, Renderers, event_of, gmcp_of
from ..server.telnet.lines import (
    LineError,
    answer_line_error,
    clean_line,
    command_of,
    quits,
    verbs_of,
)
from ..server.telnet.options import GmcpPackages, gmcp_message, parse_gmcp
from ..server.telnet.parser import text_bytes

__all__ = ["GMCP", "SUBPROTOCOLS", "TERMINAL", "MudClientSession", "MudClients", "choose"]

GMCP = "gmcp.mudstandards.org"
TERMINAL = "terminal.mudstandards.org"
# What mudgate speaks besides its own JSON protocol.
SUBPROTOCOLS = (GMCP, TERMINAL)

# The view of an event for each kind of client: its name in Outgoing.view.
_TERMINAL_VIEW = "ws-terminal"
_GMCP_VIEW = "ws-gmcp"
_GMCP_MUDGATE_VIEW = "ws-gmcp+mudgate"  # with Mudgate.Event, for a client that asked for it

_encoder = msgspec.json.Encoder()


def choose(offered: Iterable[str]) -> str | None:
    """The first subprotocol the client offers (it lists them by preference) that mudgate
    speaks; None for mudgate's own JSON protocol. Names are compared exactly, as RFC 6455's
    tokens are."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


def gmcp_event(package: str, data: object) -> Outgoing:
    """A GMCP message for one client, as the event a game sends to speak GMCP itself."""
    return encode_event(GMCP_EVENT, {"package": package, "data": data})


class MudClients:
    """What every MUD-client WebSocket of one gateway shares: the parts a player plays
    through, the renderers, and the views of an event built from them."""

    def __init__(
        self,
        *,
        hub: Hub,
        commands: CommandRegistry,
        renderers: Renderers,
        max_message_bytes: int,
    ) -> None:
        self.hub = hub
        self.commands = commands
        self.renderers = renderers
        self.max_message_bytes = max_message_bytes

    def session(self, subprotocol: str) -> MudClientSession:
        """The state of one connection that speaks ``subprotocol`` (one of SUBPROTOCOLS)."""
        return MudClientSession(self, gmcp=subprotocol == GMCP)

    def view(self, message: Outgoing, *, gmcp: bool, mudgate: bool) -> bytes:
        """``message`` as frames: its text, then (with ``gmcp``) its GMCP, ``Mudgate.Event``
        only with ``mudgate``. Built on first use, then shared by everyone it goes to."""
        if not gmcp:
            return message.view(_TERMINAL_VIEW, self._terminal)
        if mudgate:
            return message.view(_GMCP_MUDGATE_VIEW, self._gmcp_mudgate)
        return message.view(_GMCP_VIEW, self._gmcp)

    def _terminal(self, message: Outgoing) -> bytes:
        return self._frames(message, gmcp=False, mudgate=False)

    def _gmcp(self, message: Outgoing) -> bytes:
        return self._frames(message, gmcp=True, mudgate=False)

    def _gmcp_mudgate(self, message: Outgoing) -> bytes:
        return self._frames(message, gmcp=True, mudgate=True)

    def _frames(self, message: Outgoing, *, gmcp: bool, mudgate: bool) -> bytes:
        event = event_of(message.data)
        if event is None:
            return b""
        text = self.renderers.render(event)
        frames = b"" if text is None else websocket_binary_frame(text_bytes(text + "\n"))
        if gmcp:
            frames += b"".join(
                websocket_text_frame(gmcp_message(package, data))
                for package, data in gmcp_of(event, text, whole=mudgate)
            )
        return frames


class MudClientSession:
    """One MUD client's WebSocket: the GMCP packages it asked for, the view of events it
    reads, and the loop that serves what it sends."""

    __slots__ = ("_clients", "gmcp", "packages")

    def __init__(self, clients: MudClients, *, gmcp: bool) -> None:
        self._clients = clients
        self.gmcp = gmcp
        self.packages = GmcpPackages()

    def view(self, message: Outgoing) -> bytes:
        """What this client is sent for ``message`` (``MudClientTransport``'s view)."""
        return self._clients.view(message, gmcp=self.gmcp, mudgate="mudgate" in self.packages)

    async def receive_frames(self, conn: Connection, receive: Receive) -> tuple[int, str]:
        """Serve the client's frames until it is gone; how the WebSocket ended."""
        max_bytes = self._clients.max_message_bytes
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":  # websocket.disconnect
                return int(message.get("code", 1005)), str(message.get("reason") or "")
            if conn.state is not ConnectionState.OPEN:
                continue
            conn.received()
            text: str | None = message.get("text")
            data: bytes = b"" if text is not None else message.get("bytes") or b""
            if len(data) > max_bytes or (text is not None and len(text) > max_bytes):
                # mudgate's server enforces it below ASGI; this covers other ASGI servers.
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                continue
            if text is None:
                await self._lines(conn, data)
            elif self.gmcp:
                await self._gmcp(conn, text)
            else:
                answer_error(
                    conn, CommandError(ErrorCode.BAD_FRAME, "send typed lines in binary frames")
                )
            # receive() does not yield while frames are queued: let the writers this frame
            # woke up run (as realtime.py's JSON loop does).
            await asyncio.sleep(0)

    async def _lines(self, conn: Connection, data: bytes) -> None:
        """Typed lines, one or more a frame, each a command as telnet makes one of it."""
        clients = self._clients
        verbs = None
        for raw in data.split(b"\n"):
            line = clean_line(raw)
            if not line:
                continue
            if conn.state is not ConnectionState.OPEN:
                return
            if verbs is None:
                verbs = verbs_of(clients.commands.schema())
            if quits(line, verbs):
                conn.close(CloseCode.NORMAL, "Goodbye.")
                return
            try:
                frame = command_of(line, verbs)
            except LineError as error:
                # A typo is charged and told, not counted as a bad frame (as on telnet).
                answer_line_error(clients.hub, conn, error)
                continue
            failed = await clients.commands.dispatch(clients.hub, conn, frame)
            if failed is not None:
                answer_error(conn, failed)

    async def _gmcp(self, conn: Connection, text: str) -> None:
        """A GMCP message: Core.Hello, Core.Supports.*, Core.Ping, Mudgate.Command."""
        try:
            package, data = parse_gmcp(text.encode())
        except ValueError as error:
            if not conn.bad_frame():
                conn.close(CloseCode.POLICY_VIOLATION, "too many bad frames")
            else:
                conn.send(gmcp_event("Mudgate.Error", {"message": str(error)}))
            return
        name = package.lower()
        if name.startswith("core.supports.") and isinstance(data, list):
            self.packages.update(name.removeprefix("core.supports."), data)
        elif name == "core.ping":
            conn.send(gmcp_event("Core.Ping", None))
        elif name == "mudgate.command":
            clients = self._clients
            # The message's data is the frame: {"op": "say", "text": "hi"}.
            frame = _encoder.encode(data)
            failed = await clients.commands.dispatch(clients.hub, conn, frame)
            if failed is not None:
                answer_error(conn, failed)
        # Core.Hello and packages mudgate does not know are read and dropped, as on telnet.
