"""Below ASGI, over telnet: subnegotiations and lines that never end, IAC floods, NAWS spam,
negotiation loops, MCCP2 and what it costs, logins that never finish, sessions split into
single bytes. Each against a real ``mudgate serve`` with its telnet port open, while a
healthy WebSocket player and a healthy telnet player are served; each asserts what the server
may hold (RSS), that the client was told why in a line and closed, and that the event was
counted (``/monitoring/memory``'s ``telnet``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from ..e2e.clients import Player
from .gateway import MIB, Gateway, PeakRSS, poll, settled
from .telnet import (
    CHARSET,
    DO,
    DONT,
    ECHO,
    GMCP,
    IAC,
    MCCP2,
    NAME_PROMPT,
    NOP,
    SB,
    TTYPE,
    WILL,
    WONT,
    TelnetClient,
    flood,
    healthy_players,
    held_lines,
    naws,
    negotiation,
    signed_in,
    silent_logins,
    subnegotiation,
    telnet_events,
    telnet_port,
    unread_lines,
)

# Telnet commands a client may send a control_frame_window in these tests: the figures
# below (19 answers, 40 negotiations) follow from it.
COMMAND_LIMIT = 20


def telnet_gateway(gateway: Callable[..., Gateway], **settings: object) -> tuple[Gateway, int]:
    """A server with its telnet port open (a free one), and that port."""
    settings.setdefault("telnet_command_limit", COMMAND_LIMIT)
    server = gateway(telnet_port=0, **settings)
    return server, telnet_port(server)


@asynccontextmanager
async def rss(server: Gateway, attack: str) -> AsyncIterator[dict[str, float]]:
    """The server's RSS before the block, its peak during it and after it (once the server
    has settled), in MiB; printed for the record."""
    figures = {"before": server.rss_mb()}
    async with PeakRSS(server) as peak:
        yield figures
    await settled(server)
    figures |= {"peak": peak.mb, "after": server.rss_mb()}
    print(
        f"\nRSS {attack}: before {figures['before']:.1f} MiB, peak {figures['peak']:.1f}, "
        f"after {figures['after']:.1f}"
    )


def told(client: TelnetClient, message: str) -> bool:
    """Whether the server's last words to ``client`` were ``message``, in a line of its own."""
    return bytes(client.text).endswith(f"\r\n{message}\r\n".encode())


async def only_healthy_left(server: Gateway) -> None:
    """Every attacker's socket is gone: the two healthy players' remain (and the request
    that asks)."""
    await poll(lambda: server.sockets()["open"] <= 3)


# Messages that never end


@pytest.mark.slow
async def test_endless_subnegotiations_are_closed_at_their_cap(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway)
    async with healthy_players(server):
        async with rss(server, "endless subnegotiations, 50 x up to 4 MiB") as figures:
            # IAC SB GMCP, then megabytes without IAC SE, from 50 clients at once.
            clients = await flood(
                port, bytes((IAC, SB, GMCP)), b"g" * 65536, clients=50, most_bytes=4 * MIB
            )
        await only_healthy_left(server)
    message = "a telnet subnegotiation may be at most 8192 bytes long"
    assert [told(client, message) for client in clients] == [True] * 50
    assert telnet_events(server)["subnegotiation_too_long"] == 50
    assert figures["peak"] - figures["before"] < 20
    assert figures["after"] - figures["before"] < 10


async def test_an_iac_nop_flood_is_closed_as_a_command_flood(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway)
    async with healthy_players(server):
        async with rss(server, "IAC NOP x 1e6, 10 clients") as figures:
            clients = await flood(
                port, b"", bytes((IAC, NOP)) * 65536, clients=10, most_bytes=2_000_000
            )
        await only_healthy_left(server)
    assert [told(client, "too many telnet commands") for client in clients] == [True] * 10
    assert telnet_events(server)["command_flood"] == 10
    assert figures["peak"] - figures["before"] < 10


async def test_escaped_iac_bytes_count_against_the_line_cap(
    gateway: Callable[..., Gateway],
) -> None:
    # IAC IAC is one data byte 0xFF: a million of them at the name prompt, never a line end.
    server, port = telnet_gateway(gateway)
    async with healthy_players(server):
        async with rss(server, "IAC IAC x 1e6 as one name, 10 clients") as figures:
            clients = await flood(
                port, b"", bytes((IAC, IAC)) * 32768, clients=10, most_bytes=2_000_000
            )
        await only_healthy_left(server)
    message = "a line may be at most 1024 bytes long"  # at the login prompts
    assert [told(client, message) for client in clients] == [True] * 10
    assert telnet_events(server)["line_too_long"] == 10
    assert figures["peak"] - figures["before"] < 10


async def test_a_line_of_escaped_iac_bytes_is_answered_in_a_short_line(
    gateway: Callable[..., Gateway],
) -> None:
    # Under the cap, the line is a command nobody knows; the answer names it, but needs not
    # repeat a 16 KB line (three times its size once each 0xFF is a U+FFFD).
    server, port = telnet_gateway(gateway, max_message_bytes=16384)
    player = await signed_in(port, server.token("ffff").encode())
    try:
        await player.send(bytes((IAC, IAC)) * 16000 + b"\r\n")
        answer = await player.read_until(b"\r\n")
        assert b"unknown command" in answer
        assert len(answer) < 1024
        await player.send(b"say still here\r\n")
        await player.read_until(b"says: still here")
    finally:
        player.abort()


async def test_a_megabyte_line_is_closed_at_the_line_cap(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway, max_message_bytes=8192)
    async with healthy_players(server):
        async with rss(server, "1 MiB lines, 20 players") as figures:
            # Each signs in (a token), then types a megabyte without a line end.
            signing_in = [server.token(f"long{i}").encode() + b"\r\n" for i in range(20)]
            clients = await asyncio.gather(
                *(flood(port, name, b"l" * 65536, most_bytes=MIB) for name in signing_in)
            )
        await only_healthy_left(server)
    message = "a line may be at most 8192 bytes long"
    assert [told(client, message) for [client] in clients] == [True] * 20
    assert telnet_events(server)["line_too_long"] == 20
    assert figures["peak"] - figures["before"] < 10


async def test_lines_held_unfinished_cost_their_bytes(gateway: Callable[..., Gateway]) -> None:
    # 100 players type a line one byte short of the cap and never end it: the server holds
    # each line (it must), and no more than about the line each.
    cap, clients = 65536, 100
    server, port = telnet_gateway(gateway, max_message_bytes=cap)
    names = [server.token(f"holder{i}").encode() for i in range(clients)]
    async with (
        healthy_players(server),
        rss(server, "100 lines of max-1 bytes held") as figures,
        held_lines(port, names, size=cap - 1),
    ):
        await settled(server)
        held = server.rss_mb() - figures["before"]
        print(f"held: {held * MIB / clients / 1024:.1f} KiB a player")
    assert held * MIB / clients < 2 * cap + 32 * 1024
    assert telnet_events(server)["line_too_long"] == 0


# Telnet commands and negotiations


async def test_naws_spam_is_closed_as_a_command_flood(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway)
    async with healthy_players(server):
        async with rss(server, "NAWS x 10,000, 10 clients") as figures:
            clients = await flood(port, b"", naws(80, 24) * 4096, clients=10, most_bytes=360_000)
        await only_healthy_left(server)
    assert [told(client, "too many telnet commands") for client in clients] == [True] * 10
    assert telnet_events(server)["command_flood"] == 10
    # What it was sent back: the opening (offers, banner, prompt) and the reason.
    assert max(client.received for client in clients) < 1024
    assert figures["peak"] - figures["before"] < 10


async def test_a_flood_of_bad_gmcp_is_answered_then_closed(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway)
    bad = subnegotiation(GMCP, b"Core.Hello {not json")
    async with healthy_players(server):
        async with rss(server, "bad GMCP x 10,000, 10 clients") as figures:
            clients = await flood(
                port, negotiation(DO, GMCP), bad * 1000, clients=10, most_bytes=len(bad) * 10000
            )
        await only_healthy_left(server)
    for client in clients:
        assert told(client, "too many telnet commands")
        errors = [payload for option, payload in client.subnegotiations if option == GMCP]
        # DO GMCP and 19 bad messages are the 20 commands allowed: each answered once.
        assert len(errors) == 19
        assert errors[0].startswith(b"Mudgate.Error ")
    events = telnet_events(server)
    assert (events["bad_gmcp"], events["command_flood"]) == (190, 10)
    assert figures["peak"] - figures["before"] < 10


def mirror(verb: int, option: int) -> bytes:
    """A client that agrees to everything and asks again whenever it is refused: DO for
    WILL, WILL for DO, DO again for WONT, WILL again for DONT."""
    return negotiation({WILL: DO, DO: WILL, WONT: DO, DONT: WILL}[verb], option)


async def test_a_client_that_answers_every_negotiation_cannot_start_a_reply_storm(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway)
    # It also asks for what the server does not do (a refusal it asks again), and for ECHO,
    # which the server turns off again at once.
    asks = b"".join(negotiation(verb, option) for verb in (WILL, DO) for option in (99, ECHO))
    async with healthy_players(server):
        clients = await flood(port, asks, b"", clients=10, most_bytes=0, answer=mirror)
        await only_healthy_left(server)
    for client in clients:
        assert told(client, "too many telnet commands")
        assert client.received < 4096
        assert len(client.negotiations) <= 40
    assert telnet_events(server)["command_flood"] == 10


async def test_mccp2_switched_on_and_off_is_bounded(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway)
    toggles = (negotiation(DO, MCCP2) + negotiation(DONT, MCCP2)) * 5000
    async with healthy_players(server):
        async with rss(server, "DO/DONT MCCP2 x 5,000, 10 clients") as figures:
            clients = await flood(port, b"", toggles, clients=10, most_bytes=len(toggles))
        await only_healthy_left(server)
    for client in clients:
        assert told(client, "too many telnet commands")
        assert client.received < 4096
        assert client.compressions <= 11  # at most one a DO, and 20 events in all
    assert telnet_events(server)["command_flood"] == 10
    assert server.memory()["telnet"]["compressed"] == 0
    assert figures["peak"] - figures["before"] < 10


# MCCP2: bounded, capped, and no excuse for not reading


@pytest.mark.slow
async def test_a_compressed_player_that_never_reads_is_closed_as_a_slow_consumer(
    gateway: Callable[..., Gateway],
) -> None:
    write_timeout = 2.0
    server, port = telnet_gateway(
        gateway,
        write_timeout=write_timeout,
        player_messages_per_second=1000,
        player_message_burst=1000,
    )
    async with healthy_players(server):
        # Asks for MCCP2, signs in, and never reads a byte of the compressed stream.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        # (MCCP2 is for players: asked for once signed in, it is granted.)
        stalled.sendall(server.token("squeezed").encode() + b"\r\n" + negotiation(DO, MCCP2))
        await poll(lambda: server.memory()["connections"]["active_telnet"] == 2)
        assert server.memory()["telnet"]["compressed"] == 1
        async with rss(server, "MCCP2 player that never reads, room talking") as figures:
            talkers = [await Player.connect(server.ws(f"talker{i}")) for i in range(3)]
            started = asyncio.get_running_loop().time()

            async def talk(player: Player) -> None:
                # Text zlib cannot shrink much, so the stalled one's buffers fill.
                while (await asyncio.to_thread(server.memory))["connections"]["active_telnet"] > 1:
                    for _ in range(20):
                        await player.send(op="say", text=os.urandom(600).hex())
                    await asyncio.sleep(0.05)

            async with asyncio.timeout(20):
                await asyncio.gather(*(talk(player) for player in talkers))
            closed_after = asyncio.get_running_loop().time() - started
            for player in talkers:
                await player.close()
        stalled.close()
        await only_healthy_left(server)
    print(f"\nclosed {closed_after:.1f} s after the room started talking")
    # write_timeout for the write to block, then as long again to close (Flow's close_timeout).
    assert closed_after < 2 * write_timeout + 3
    assert server.memory()["telnet"]["compressed"] == 0
    assert "mudgate_slow_consumer_disconnects_total 1.0" in metrics(server)
    closes = [r for r in server.records() if r.get("event") == "connection closed"]
    assert [r["code"] for r in closes if r.get("player") == "squeezed"] == [4008]
    assert figures["peak"] - figures["before"] < 20


def metrics(server: Gateway) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_compression_past_its_cap_is_declined(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway, telnet_max_compressed=2)
    clients = []
    try:
        for _ in range(5):
            client = await TelnetClient.open(port)
            clients.append(client)
            await client.read_until(NAME_PROMPT)  # in the clear: nothing agreed yet
            await client.send(negotiation(DO, MCCP2))  # too early: offered to players only
            await poll(lambda c=client: (WONT, MCCP2) in c.negotiations)
            client.negotiations.clear()
            await client.send(server.token(f"squeezed{len(clients)}").encode() + b"\r\n")
            await client.read_until(b"Welcome")
            await client.send(negotiation(DO, MCCP2))
            await poll(lambda c=client: c.compressions == 1 or (WONT, MCCP2) in c.negotiations)
        assert [client.compressions for client in clients] == [1, 1, 0, 0, 0]
        # The first two were offered MCCP2; past the cap it is neither offered nor granted.
        assert [(WILL, MCCP2) in client.negotiations for client in clients] == [True] * 2 + [
            False
        ] * 3
        assert [(WONT, MCCP2) in client.negotiations for client in clients] == [False] * 2 + [
            True
        ] * 3
        telnet = server.memory()["telnet"]
        assert (telnet["compressed"], telnet["compressed_capacity"]) == (2, 2)
        assert telnet["events"]["compression_declined"] == 3
        await clients[4].send(b"say squeezed\r\n")
        for client in clients:
            await client.read_until(b"says: squeezed")
    finally:
        for client in clients:
            client.abort()
    await poll(lambda: server.memory()["telnet"]["compressed"] == 0)


# Logins that never finish


async def test_silent_logins_are_evicted_when_the_socket_table_is_full(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway, max_sockets=60)
    async with (
        healthy_players(server),
        rss(server, "300 silent logins, 60 sockets") as figures,
        silent_logins(port, count=300) as silent,
    ):
        await poll(lambda: sum(client.closed for client in silent) >= 240)
        sockets = server.sockets()
        assert sockets["open"] <= 60
        assert sockets["evicted"] >= 240
        # A newcomer still gets in (it evicts the oldest silent one).
        newcomer = await signed_in(port, server.token("newcomer").encode())
        newcomer.abort()
    assert figures["peak"] - figures["before"] < 10


async def test_a_newcomer_to_a_table_full_of_players_is_told_and_counted(
    gateway: Callable[..., Gateway],
) -> None:
    # Five sockets: the two healthy players and three more, none of them evictable.
    server, port = telnet_gateway(gateway, max_sockets=5)
    async with healthy_players(server):
        players = [await signed_in(port, server.token(f"p{i}").encode()) for i in range(3)]
        newcomer = await TelnetClient.open(port)
        text = await newcomer.ended()
        newcomer.abort()
        # Room for the question: a player leaves, and a login takes the place (evictable, so
        # that the request asking can push it out).
        players.pop().abort()
        async with asyncio.timeout(10):
            while True:
                probe = await TelnetClient.open(port)
                try:
                    await probe.read_until(NAME_PROMPT)
                    break
                except EOFError:  # refused again: the player's socket is not gone yet
                    probe.abort()
        assert telnet_events(server)["refused"] >= 1
        for client in (*players, probe):
            client.abort()
    assert text == b"The server is full; try again later.\r\n"


async def test_logins_that_never_type_are_timed_out(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway, telnet_login_timeout=1)
    async with healthy_players(server):
        async with (
            rss(server, "100 logins that never type") as figures,
            silent_logins(port, count=100) as silent,
            asyncio.timeout(10),
        ):
            for client in silent:
                await client.ended()
        await only_healthy_left(server)
    assert all(told(client, "You did not sign in within 1 s.") for client in silent)
    assert telnet_events(server)["login_timeout"] == 100
    assert figures["peak"] - figures["before"] < 10


async def test_three_wrong_tokens_close_the_connection(gateway: Callable[..., Gateway]) -> None:
    server, port = telnet_gateway(gateway)
    forged = b".".join([b"x" * 20, b"y" * 20, b"z" * 20]) + b"\r\n"
    async with healthy_players(server):
        clients = await flood(port, forged * 3, b"", clients=3, most_bytes=0)
        # Past 10 failures a minute from one address, whatever the connections, it is refused
        # before its name is even checked: a password cannot be guessed on many connections.
        late = await flood(port, forged * 3, b"", clients=1, most_bytes=0)
        await only_healthy_left(server)
    for client in clients:
        text = bytes(client.text)
        assert text.count(b"Sign-in failed") == 3
        assert text.rstrip().endswith(b"Too many attempts.")
    assert bytes(late[0].text).count(b"Sign-in failed") == 1
    assert b"Too many failed sign-ins from your address" in bytes(late[0].text)
    assert telnet_events(server)["login_failed"] == 10


# Split anywhere


async def test_a_session_sent_a_byte_at_a_time_still_works(
    gateway: Callable[..., Gateway],
) -> None:
    server, port = telnet_gateway(gateway)
    client = await TelnetClient.open(port)
    client.writer.transport.get_extra_info("socket").setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )

    async def byte_by_byte(data: bytes) -> None:
        # One segment a byte: IAC apart from its verb, CR apart from LF.
        for byte in data:
            await client.send(bytes((byte,)))
            await asyncio.sleep(0.002)

    try:
        await client.read_until(NAME_PROMPT)
        await byte_by_byte(
            negotiation(DO, GMCP)
            + negotiation(WILL, TTYPE)
            + subnegotiation(TTYPE, b"\x00MUDLET")
            + naws(255, 24)  # 255 is sent IAC IAC
            + negotiation(DONT, CHARSET)
            + bytes((IAC, NOP))
            + b"guest\r\n"
        )
        await client.read_until(b"Welcome")
        await byte_by_byte(b"say one\r\nsay two\r\x00say three\n")
        await client.read_until(b"says: one")
        await client.read_until(b"says: two")
        await client.read_until(b"says: three")
        command = b'Mudgate.Command {"op": "say", "text": "over gmcp"}'
        await byte_by_byte(subnegotiation(GMCP, command))
        await client.read_until(b"says: over gmcp")
    finally:
        client.abort()
    assert not [record for record in server.records() if record["level"] == "error"]


# Answers a client does not read


async def test_a_client_that_never_reads_cannot_make_the_server_hold_its_answers(
    gateway: Callable[..., Gateway],
) -> None:
    # Every empty line at the name prompt is answered with the prompt again: 45 bytes for 1.
    # Reading stops once 64 KiB of answers wait (write_buffer_bytes), so a client that never
    # reads may make the server hold that, a read and the kernel's buffers; not one read's
    # worth of lines answered in full (32 KiB of them is 1.4 MiB of prompts).
    server, port = telnet_gateway(gateway)
    clients = 20
    async with healthy_players(server):
        async with rss(server, "20 logins that never read, empty lines") as figures:
            await unread_lines(port, b"\n", clients=clients)
        await only_healthy_left(server)
    per_client = (figures["peak"] - figures["before"]) * MIB / clients
    print(f"held {per_client / 1024:.0f} KiB a client")
    assert per_client < 256 * 1024


async def test_unknown_commands_are_rate_limited_like_any_command(
    gateway: Callable[..., Gateway],
) -> None:
    # A WebSocket player flooding unknown ops is rate-limited, then closed (4029); so is a
    # telnet player flooding lines that are no command.
    server, port = telnet_gateway(gateway)
    async with healthy_players(server):
        client = await signed_in(port, server.token("griefer").encode())
        try:
            await client.send(b"xyzzy\r\n" * 3000)
            with contextlib.suppress(TimeoutError):  # asserted below
                await client.ended(timeout=5)
            closed = client.closed
        finally:
            client.abort()
    answered = bytes(client.text).count(b"unknown command")
    assert closed, f"never closed: {answered} of 3000 lines answered 'unknown command'"
    assert answered <= 30 + 10 * 5
    assert told(client, "Closed: too many messages.")


async def test_the_memory_budget_counts_what_telnet_can_make_the_server_hold(
    gateway: Callable[..., Gateway],
) -> None:
    # Invariant 11: a telnet line, a subnegotiation and MCCP2's zlib state are bounded per
    # connection and counted in memory_budget.
    caps = {"max_sockets": 1000, "max_connections": 500, "telnet_max_compressed": 200}

    def players_worst_case_mb(server: Gateway) -> float:
        # Every line but the process's own (which differs a little from one start to another).
        lines = server.memory()["memory_budget"]["lines"]
        return sum(line["worst_case_mb"] for line in lines if line["structure"] != "process")

    plain = players_worst_case_mb(gateway(**caps))
    telnet = players_worst_case_mb(gateway(telnet_port=0, **caps))
    print(f"\nbudget without telnet {plain:.1f} MiB, with {telnet:.1f} MiB")
    # At least each connection's subnegotiation (8 KiB) and each compressed one's zlib
    # state (about 9 KiB, docs/operations.md).
    assert telnet - plain >= (500 * 8192 + 200 * 9 * 1024) / MIB
