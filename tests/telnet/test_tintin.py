"""TinTin++, a real MUD client (Debian's tintin++), signs in to a real server as a guest, talks
with a WebSocket player, receives GMCP and reads it all through MCCP2."""

from __future__ import annotations

import asyncio

from ..e2e.clients import Player
from ..e2e.server import RunningServer
from .conftest import telnet_port
from .tintin import run_tintin

PLAY = r"""
#action {What is your name} {guest}
#action {Welcome, %1.} {gmcp Core.Hello {"client":"tintin","version":"2.02"}; say hello from tintin}
#action {bob says: hello back} {look}
#action {Here: %*} {done}
"""


async def test_tintin_plays_with_a_websocket_player(server: RunningServer) -> None:
    bob = await Player.connect(server.ws("bob"))
    await bob.next("welcome")

    async def answer() -> str:
        said = await bob.next("say", timeout=15)
        while said["from"] == "bob":
            said = await bob.next("say", timeout=15)
        await bob.send(op="say", text="hello back")
        return str(said["from"])

    run, guest = await asyncio.gather(
        run_tintin("127.0.0.1", telnet_port(server), PLAY, timeout=20), answer()
    )
    assert guest.startswith("guest-")
    assert f"{guest} says: hello from tintin" in run.text
    assert "bob says: hello back" in run.text
    assert f"Here: bob, {guest}" in run.text or f"Here: {guest}, bob" in run.text
    assert run.gmcp_data("Char.Name") == [{"name": guest, "fullname": guest}]
    talk = run.gmcp_data("Comm.Channel.Text")
    assert {"channel": "say", "talker": "bob", "text": "bob says: hello back"} in talk
    assert run.gmcp_data("Room.Info")[0]["num"] == "lobby"
    assert run.mccp2 is True  # tt++ was inflating the server's MCCP2 stream when it ended
    assert not run.disconnected
    await bob.close()


async def test_tintin_without_compression_or_gmcp(server: RunningServer) -> None:
    script = "#config {mccp} {off}\n#unevent {IAC WILL GMCP}\n" + PLAY.replace(
        "#action {bob says: hello back} {look}", ""
    ).replace("#action {Here: %*} {done}", "#action {says: hello from tintin} {done}")
    run = await run_tintin("127.0.0.1", telnet_port(server), script, timeout=20)
    assert "says: hello from tintin" in run.text
    assert run.gmcp == ()
    assert run.mccp2 is False
