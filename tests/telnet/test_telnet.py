"""Telnet players against a real server: signing in, talking with WebSocket players, lines as
commands, the MUD protocols (GMCP, MCCP2, MTTS, EOR, MSSP, CHARSET), and leaving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import telnetlib3

from mudgate import CommandContext, Credentials, Renderers, TokenError
from mudgate.commands import builtin_commands

from ..e2e.clients import Player
from ..e2e.server import RunningServer, wait_for
from .client import (
    CHARSET,
    DO,
    DONT,
    EOR,
    EOR_CMD,
    GA,
    GMCP,
    IAC,
    MCCP2,
    MSSP,
    SB,
    SE,
    TTYPE,
    WILL,
    WONT,
    TelnetClient,
)
from .conftest import telnet_port

Serve = Callable[..., RunningServer]


async def said_by(player: Player, speaker: str) -> dict[str, Any]:
    """The next ``say`` by ``speaker`` that ``player`` hears (their own words come back too)."""
    while True:
        said = await player.next("say")
        if said["from"] == speaker:
            return said


def telnet_stats(server: RunningServer) -> Any:
    telnet = server.gateway.telnet
    assert telnet is not None
    return server.call(telnet.stats)


async def test_a_telnet_guest_and_a_websocket_player_talk(server: RunningServer) -> None:
    bob = await Player.connect(server.ws("bob"))
    await bob.next("welcome")
    guest = await TelnetClient.connect(telnet_port(server))
    me = await guest.login()
    assert me.startswith("guest-")
    assert "You are in lobby" in guest.text
    await wait_for(lambda: server.stats()["active_telnet"] == 1)

    guest.line("say hello from telnet")
    said = await bob.next("say")
    assert (said["from"], said["text"]) == (me, "hello from telnet")
    await bob.send(op="say", text="hello from the browser")
    await guest.expect("bob says: hello from the browser")
    assert "\x1b[33mbob\x1b[0m says" in guest.raw_text  # in colour

    guest.line("tell bob psst")
    told = await bob.next("tell")
    assert (told["from"], told["text"]) == (me, "psst")
    await guest.expect("You tell bob: psst")
    await bob.send(op="tell", to=me, text="hi there")
    await guest.expect("bob tells you: hi there")

    guest.line("quit")
    await guest.expect("Goodbye.")
    await guest.wait_closed()
    await wait_for(lambda: server.stats()["active_telnet"] == 0)
    await bob.close()


async def test_lines_become_commands(server: RunningServer) -> None:
    guest = await TelnetClient.connect(telnet_port(server))
    me = await guest.login()
    guest.line("help")
    await guest.expect("tell TO TEXT")
    guest.line("'a quick word")
    await guest.expect(f"{me} says: a quick word")
    guest.line("go market")
    guest.line("look")
    await guest.expect("market")
    guest.line("xyzzy now")
    await guest.expect("unknown command 'xyzzy'")
    guest.line("tell")
    await guest.expect("usage: tell TO TEXT")
    guest.line('{"op": "say", "text": "as JSON"}')
    await guest.expect(f"{me} says: as JSON")
    guest.line("tell nobody-here hi")
    await guest.expect("! ")  # an error, as a line
    guest.line("say tab\there and a bell\x07 and back\x08\x08\x08\x08spaced")
    await guest.expect(f"{me} says: tab here and a bell and spaced")
    await guest.close()


async def test_gmcp_carries_events_and_commands(server: RunningServer) -> None:
    bob = await Player.connect(server.ws("bob"))
    await bob.next("welcome")
    guest = await TelnetClient.connect(telnet_port(server), gmcp=True)
    me = await guest.login()
    assert (await guest.gmcp_message("Char.Name"))["name"] == me

    guest.line("look")
    info = await guest.gmcp_message("Room.Info")
    assert (info["num"], info["exits"]) == ("lobby", {})
    await bob.send(op="say", text="hi all")
    talk = await guest.gmcp_message("Comm.Channel.Text")
    assert talk == {"channel": "say", "talker": "bob", "text": "bob says: hi all"}

    guest.send_gmcp("Core.Hello", {"client": "pytest", "version": "1"})
    guest.send_gmcp("Core.Ping")
    await guest.gmcp_message("Core.Ping")
    guest.send_gmcp("Mudgate.Command", {"op": "say", "text": "over GMCP"})
    assert (await said_by(bob, me))["text"] == "over GMCP"
    assert not [p for p, _ in guest.gmcp if p == "Mudgate.Event"]  # not asked for
    guest.send_gmcp("Core.Supports.Set", ["Room 1", "Mudgate 1"])
    guest.line("who")
    event = await guest.gmcp_message("Mudgate.Event")
    assert event["event"] in ("say", "who")

    guest.send(bytes((IAC, SB, GMCP)) + b"Core.Hello {not json" + bytes((IAC, SE)))
    error = await guest.gmcp_message("Mudgate.Error")
    assert "not JSON" in error["message"]
    assert telnet_stats(server).events["bad_gmcp"] == 1
    await guest.close()
    await bob.close()


async def test_a_game_sends_its_own_gmcp_and_renders_its_own_events(serve: Serve) -> None:
    commands = builtin_commands()

    @commands.register("vitals")
    def vitals(ctx: CommandContext, args: Any) -> None:
        ctx.reply("gmcp", package="Char.Vitals", data={"hp": 10, "maxhp": 12})
        ctx.reply("rolled", total=7)

    renderers = Renderers()
    renderers.event("rolled")(lambda event: f"You roll a {event['total']}.")
    server = serve(gateway_options={"commands": commands, "renderers": renderers})
    guest = await TelnetClient.connect(telnet_port(server), gmcp=True)
    await guest.login()
    guest.line("vitals")
    assert await guest.gmcp_message("Char.Vitals") == {"hp": 10, "maxhp": 12}
    await guest.expect("You roll a 7.")
    await guest.close()


async def test_mccp2_compresses_everything_after_it(serve: Serve) -> None:
    server = serve(telnet_max_compressed=1)
    port = telnet_port(server)
    first = await TelnetClient.connect(port, mccp=True, gmcp=True)
    await first.login()
    await first.until(lambda: first.compressed)  # offered to players, once signed in
    assert telnet_stats(server).compressed == 1
    first.line("say compressed words " * 20)
    await first.expect("says: compressed words")
    assert first.compressed_bytes > 0

    # At the cap MCCP2 is not offered, and declined if asked.
    second = await TelnetClient.connect(port)
    await second.login()
    second.line("who")
    await second.expect("Online (2)")
    assert (WILL, MCCP2) not in second.negotiations
    second.send(bytes((IAC, DO, MCCP2)))
    await second.until(lambda: (WONT, MCCP2) in second.negotiations)
    assert telnet_stats(server).events["compression_declined"] == 1

    first.send(bytes((IAC, DONT, MCCP2)))  # the stream ends; text goes on uncompressed
    await wait_for(lambda: telnet_stats(server).compressed == 0)
    await first.close()
    await second.close()


async def test_mtts_decides_colour_and_eor_marks_prompts(server: RunningServer) -> None:
    # MTTS 0: no ANSI; EOR agreed: prompts end with IAC EOR rather than GA.
    plain = await TelnetClient.connect(telnet_port(server), ttype=["Mudlet", "XTERM", "MTTS 0"])
    await plain.expect("What is your name")
    plain.send(bytes((IAC, DO, EOR)))
    # Three rounds of TTYPE at most (MTTS): the client, its terminal, its capabilities.
    await plain.until(lambda: len([o for o, _ in plain.subnegotiations if o == TTYPE]) == 3)
    plain.line("")  # an empty name: asked again, now with EOR
    await plain.until(lambda: EOR_CMD in plain.commands)
    assert plain.commands[0] == GA
    await plain.login()
    plain.line("say no colour")
    await plain.expect("says: no colour")
    assert "\x1b[" not in plain.raw_text
    await plain.close()

    dumb = await TelnetClient.connect(telnet_port(server), ttype=["dumb"])
    # Asked again once its first answer is in (the server then knows it), and not after.
    await dumb.until(lambda: len([o for o, _ in dumb.subnegotiations if o == TTYPE]) == 2)
    await dumb.login()
    assert "\x1b[" not in dumb.raw_text


async def test_mssp_and_charset_for_those_who_ask(server: RunningServer) -> None:
    crawler = await TelnetClient.connect(telnet_port(server))
    await crawler.expect("What is your name")
    assert (WILL, MSSP) in crawler.negotiations
    crawler.send(bytes((IAC, DO, MSSP, IAC, DO, CHARSET)))
    await crawler.until(lambda: {o for o, _ in crawler.subnegotiations} >= {MSSP, CHARSET})
    mssp = next(p for o, p in crawler.subnegotiations if o == MSSP)
    pairs = {
        name.decode(): value.decode()
        for name, value in (
            item.split(b"\x02") for item in mssp.split(b"\x01")[1:] if b"\x02" in item
        )
    }
    assert (pairs["NAME"], pairs["PLAYERS"], pairs["CODEBASE"]) == ("mudgate", "0", "mudgate")
    assert int(pairs["UPTIME"]) > 1_700_000_000
    assert next(p for o, p in crawler.subnegotiations if o == CHARSET) == b"\x01;UTF-8"
    crawler.send(bytes((IAC, SB, CHARSET, 2)) + b"UTF-8" + bytes((IAC, SE)))
    # Each request that changes something is answered once; one that does not, never: no loop.
    before = len(crawler.negotiations)
    crawler.send(bytes((IAC, DO, MSSP, IAC, DO, GMCP, IAC, DO, GMCP, IAC, DONT, GMCP)))
    crawler.send(bytes((IAC, DONT, GMCP, IAC, DO, 99, IAC, WILL, 99)))
    crawler.line("")
    await crawler.until(lambda: crawler.text.count("What is your name") == 2)
    assert crawler.negotiations[before:] == [(WILL, GMCP), (WONT, GMCP), (WONT, 99), (DONT, 99)]
    await crawler.close()


async def test_signing_in_with_a_name_and_password(serve: Serve) -> None:
    async def authenticate(credentials: Credentials) -> str | None:
        if credentials.name is None:
            return None
        if (credentials.name, credentials.password) == ("alice", "s3cret"):
            return "alice"
        raise TokenError("wrong name or password")

    server = serve(gateway_options={"authenticate": authenticate})
    client = await TelnetClient.connect(telnet_port(server))
    await client.expect("What is your name")
    client.line("alice")
    await client.expect("Password:")
    assert (WILL, 1) in client.negotiations  # echo off while the password is typed
    client.send(bytes((IAC, DO, 1)))
    client.line("wrong")
    await client.expect("Sign-in failed: wrong name or password.")
    assert (WONT, 1) in client.negotiations
    client.line("alice")
    await client.expect("Password:")
    client.line("s3cret")
    await client.expect("Welcome, alice.")
    await client.close()

    # A token pasted at the prompt works too; three failures close the connection.
    token_client = await TelnetClient.connect(telnet_port(server))
    await token_client.expect("What is your name")
    token_client.line(server.token("carol"))
    await token_client.expect("Welcome, carol.")
    await token_client.close()
    stranger = await TelnetClient.connect(telnet_port(server))
    for _ in range(3):
        await stranger.expect("What is your name")
        stranger.line("mallory")
        await stranger.expect("Password:")
        stranger.line("guess")
    await stranger.expect("Too many attempts.")
    await stranger.wait_closed()
    assert telnet_stats(server).events["login_failed"] == 4


async def test_guests_only_where_allowed(serve: Serve) -> None:
    server = serve(allow_guests=False)
    client = await TelnetClient.connect(telnet_port(server))
    await client.expect("What is your name")
    client.line("guest")
    await client.expect("Guests are not allowed here.")
    client.line("someone")
    await client.expect("signs players in with a token")
    await client.close()


async def test_players_are_told_when_the_server_restarts(serve: Serve) -> None:
    server = serve()
    player = await TelnetClient.connect(telnet_port(server))
    await player.login()
    waiting = await TelnetClient.connect(telnet_port(server))
    await waiting.expect("What is your name")
    await asyncio.to_thread(server.stop)
    await player.expect("The server is restarting: reconnect within 5 s.")
    await player.wait_closed()
    await waiting.expect("The server is restarting")
    await waiting.wait_closed()


async def test_telnetlib3_signs_in_and_talks(server: RunningServer) -> None:
    """An independent client library: its own negotiation, its own line handling."""
    bob = await Player.connect(server.ws("bob"))
    await bob.next("welcome")
    reader, writer = await telnetlib3.open_connection(
        "127.0.0.1", telnet_port(server), encoding="utf8", connect_minwait=0.05, cols=120
    )
    seen = ""

    async def read_until(text: str) -> None:
        nonlocal seen
        async with asyncio.timeout(5):
            while text not in seen:
                seen += await reader.read(4096)

    await read_until("What is your name")
    writer.write("guest\r\n")
    await read_until("Welcome, ")
    writer.write("say hello from telnetlib3\r\n")
    assert (await bob.next("say"))["text"] == "hello from telnetlib3"
    writer.close()
    await bob.close()


async def test_a_sign_in_hook_that_fails_is_told_not_hung(serve: Serve) -> None:
    def authenticate(credentials: Credentials) -> str | None:
        raise RuntimeError("the accounts database is down")

    server = serve(gateway_options={"authenticate": authenticate})
    client = await TelnetClient.connect(telnet_port(server))
    await client.expect("What is your name")
    client.line("alice")
    await client.expect("Password:")
    client.line("pw")
    await client.expect("Sign-in failed: the server could not check it.")
    await client.expect("What is your name (or guest, or a token)? ")
    await client.close()


async def test_commands_over_gmcp_count_as_commands_not_as_telnet_chatter(serve: Serve) -> None:
    server = serve(
        telnet_command_limit=10, player_messages_per_second=1000, player_message_burst=1000
    )
    client = await TelnetClient.connect(telnet_port(server), gmcp=True)
    me = await client.login()
    for i in range(30):
        client.send_gmcp("Mudgate.Command", {"op": "say", "text": f"line {i}"})
    await client.expect(f"{me} says: line 29")
    assert telnet_stats(server).events["command_flood"] == 0
    await client.close()
