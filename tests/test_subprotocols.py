"""The MUD clients' WebSocket subprotocols without a server: which is chosen, the views of an
event, and the receive loop as any ASGI server drives it."""

from __future__ import annotations

import asyncio
from typing import Any

from mudgate.commands import builtin_commands
from mudgate.hub import Hub
from mudgate.protocol import CloseCode, encode_event, websocket_messages
from mudgate.render import Renderers
from mudgate.transports import MudClientTransport
from mudgate.web.subprotocols import GMCP, TERMINAL, MudClients, choose

from .conftest import connect


def clients(hub: Hub, max_message_bytes: int = 1024) -> MudClients:
    return MudClients(
        hub=hub,
        commands=builtin_commands(),
        renderers=Renderers(),
        max_message_bytes=max_message_bytes,
    )


def test_the_first_offered_subprotocol_mudgate_speaks_is_chosen() -> None:
    assert choose([]) is None
    assert choose(["v1.evennia.com", "telnet.mudstandards.org"]) is None
    assert choose(["v1.evennia.com", GMCP, TERMINAL]) == GMCP
    assert choose([TERMINAL, GMCP]) == TERMINAL
    assert choose(["GMCP.mudstandards.org"]) is None  # tokens are compared exactly


async def test_an_event_is_rendered_once_per_view_for_every_client(hub: Hub) -> None:
    mud = clients(hub)
    one, two, mudgate, terminal = (
        mud.session(GMCP),
        mud.session(GMCP),
        mud.session(GMCP),
        mud.session(TERMINAL),
    )
    mudgate.packages.update("set", ["Mudgate 1"])
    message = encode_event("say", {"room": "lobby", "from": "ann", "text": "hi\x1b[2J"})
    assert one.view(message) is two.view(message)  # built once, the same bytes for both
    frames = list(websocket_messages(one.view(message)))
    assert frames == [
        (False, b"\x1b[33mann\x1b[0m says: hi[2J\r\n"),
        (True, b'Comm.Channel.Text {"channel":"say","talker":"ann","text":"ann says: hi[2J"}'),
    ]
    assert list(websocket_messages(mudgate.view(message)))[:2] == frames
    assert list(websocket_messages(mudgate.view(message)))[2][1].startswith(b"Mudgate.Event {")
    assert list(websocket_messages(terminal.view(message))) == frames[:1]
    # Nothing to show and no GMCP: nothing is written.
    assert one.view(encode_event("pong", {})) == b""


class Client:
    """What an ASGI server hands the app: a receive callable over a queue of messages."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in messages:
            self.queue.put_nowait(message)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1000})

    async def receive(self) -> dict[str, Any]:
        return await self.queue.get()


async def test_a_message_over_the_limit_closes_with_1009_under_any_asgi_server(hub: Hub) -> None:
    session = clients(hub, max_message_bytes=16).session(GMCP)
    conn = connect(hub, "mud")
    ended = await session.receive_frames(
        conn, Client({"type": "websocket.receive", "bytes": b"say " + b"x" * 20}).receive
    )
    assert ended == (1000, "")
    assert conn.close_code is CloseCode.MESSAGE_TOO_BIG


async def test_asgi_servers_get_one_message_a_frame() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    message = encode_event("say", {"from": "ann", "text": "hi"})
    frames = b"".join(
        [b"\x82\x04text", b"\x81\x09Core.Ping"]  # a binary frame, then a text frame
    )
    transport = MudClientTransport(lambda _: frames, send)
    assert not transport.write_now(message)  # no FrameWriter: always through the writer
    await transport.write(message)
    assert sent == [
        {"type": "websocket.send", "bytes": b"text"},
        {"type": "websocket.send", "text": "Core.Ping"},
    ]
