"""mudgate.client against a real server (mudgate.testing): it talks, reconnects by close code,
gets a new token when refused, and stops when told to."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from random import Random
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

from mudgate import CloseCode, Gateway, create_app
from mudgate.client import Client, Closed, Resume
from mudgate.protocol import Position, parse_resume
from mudgate.testing import GameServer, serve_game

from .conftest import make_settings
from .e2e.blip import BlipProxy
from .e2e.server import wait_for
from .redis_server import free_port

WAIT = 5.0


@pytest.fixture
async def game() -> AsyncIterator[tuple[GameServer, Any]]:
    settings = make_settings()
    gateway = Gateway(settings)
    async with serve_game(create_app(gateway), gateway) as server:
        yield server, gateway.hub


def close_all(hub: Any, player_id: str, code: CloseCode, reason: str | None = None) -> None:
    for conn in list(hub.registry.player_connections.get(player_id, ())):
        conn.close(code, reason)


async def test_players_talk_and_iteration_ends_when_the_client_closes(
    game: tuple[GameServer, Any],
) -> None:
    server, _ = game
    async with server.player("alice") as alice, server.player("bob") as bob:
        assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
        await bob.next("welcome", within=WAIT)
        await alice.send({"op": "say", "text": "hi bob"})
        assert (await bob.next("say", within=WAIT))["text"] == "hi bob"
        await bob.close()
        seen = [message async for message in bob]  # what was left, then the end
        assert all(isinstance(message, dict) for message in seen)
        with pytest.raises(Closed) as closed:
            await bob.recv()
        assert closed.value.code == CloseCode.NORMAL


async def test_a_recycled_connection_comes_back_after_a_delay_within_the_window(
    game: tuple[GameServer, Any],
) -> None:
    server, hub = game
    draws = Recorder()
    async with server.player("alice", random=draws) as alice:
        await alice.next("welcome", within=WAIT)
        close_all(hub, "alice", CloseCode.RECYCLED)
        assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
        assert alice.reconnects == 1
        await alice.send({"op": "ping", "id": 7})
        assert (await alice.next("pong", within=WAIT))["id"] == 7
    assert draws.windows() == [5.0]  # the welcome's reconnect_window, by default


async def test_a_restart_spreads_the_reconnect_over_the_window_the_welcome_gives() -> None:
    settings = make_settings(reconnect_window=0.25)
    gateway = Gateway(settings)
    draws = Recorder()
    async with serve_game(create_app(gateway), gateway) as server:
        alice = server.player("alice", random=draws)
        async with alice:
            assert (await alice.next("welcome", within=WAIT))["reconnect_window"] == 0.25
            close_all(gateway.hub, "alice", CloseCode.SERVICE_RESTART)
            await alice.next("welcome", within=WAIT)
    assert draws.windows() == [0.25]


async def test_a_restart_spreads_the_reconnect_over_the_window_its_close_reason_gives(
    game: tuple[GameServer, Any],
) -> None:
    server, hub = game
    draws = Recorder()
    async with server.player("alice", random=draws) as alice:
        await alice.next("welcome", within=WAIT)
        reason = "service restart; reconnect within 0.25 s"
        close_all(hub, "alice", CloseCode.SERVICE_RESTART, reason)
        assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
    assert draws.windows() == [0.25]


async def test_without_restart_jitter_a_restart_reconnects_at_once(
    game: tuple[GameServer, Any],
) -> None:
    server, hub = game
    draws = Recorder()
    async with server.player("alice", random=draws, restart_jitter=False) as alice:
        await alice.next("welcome", within=WAIT)
        close_all(hub, "alice", CloseCode.SERVICE_RESTART)
        assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
    assert draws.ranges == []


async def test_a_replaced_connection_does_not_come_back(game: tuple[GameServer, Any]) -> None:
    server, hub = game
    async with server.player("alice") as alice:
        await alice.next("welcome", within=WAIT)
        close_all(hub, "alice", CloseCode.REPLACED)
        async with asyncio.timeout(WAIT):
            left = [message async for message in alice]  # iteration ends: no reconnect
        assert all(message.get("type") in ("event", "error") for message in left)
        with pytest.raises(Closed) as closed:
            await alice.recv()
        assert closed.value.code == CloseCode.REPLACED
        assert alice.reconnects == 0
        with pytest.raises(Closed):
            await alice.send({"op": "ping"})


async def test_a_refused_token_is_replaced_by_a_fresh_one(game: tuple[GameServer, Any]) -> None:
    server, _ = game
    tokens = iter(["not-a-token", server.token("carol")])
    async with Client(server.ws_url, token_factory=lambda: next(tokens)) as carol:
        assert (await carol.next("welcome", within=WAIT))["player"] == "carol"
        assert carol.reconnects == 1


async def test_a_refused_token_without_a_factory_ends_the_session(
    game: tuple[GameServer, Any],
) -> None:
    server, _ = game
    client = Client(server.ws_url, token="not-a-token")
    with pytest.raises(Closed) as closed:
        await client.connect()
    assert closed.value.code == CloseCode.UNAUTHORIZED
    await client.close()


async def test_no_server_is_an_error_at_once() -> None:
    client = Client(f"ws://127.0.0.1:{free_port()}/ws", token="t")
    with pytest.raises(ConnectionRefusedError):
        await client.connect()
    await client.close()


def test_a_client_needs_a_token_or_a_way_to_get_one() -> None:
    with pytest.raises(ValueError, match="token"):
        Client("ws://127.0.0.1:1/ws")


# Reconnecting through what a network does: a proxy that resets, answers 503, or says nothing.


class Recorder(Random):
    """Random numbers for a test: the low end of every range asked for, which is recorded."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return a

    def windows(self) -> list[float]:
        """The windows reconnects were spread over (ranges that start at 0)."""
        return [b for a, b in self.ranges if a == 0.0]


class Front:
    """A TCP front for a server: forwards each connection, except that the next ones may be
    met otherwise ("503": an HTTP 503 answer, "silent": nothing at all); keeps each
    handshake's request line; ``cut`` resets every open connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.next_answers: list[str] = []
        self.requests: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Front:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head.split(b"\r\n", 1)[0].decode())
            answer = self.next_answers.pop(0) if self.next_answers else "forward"
            if answer == "503":
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            elif answer == "silent":
                await reader.read()  # until the client gives up
            else:
                await self._forward(head, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _forward(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._open.add(up_writer)
        up_writer.write(head)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open.discard(up_writer)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def fast(**options: Any) -> dict[str, Any]:
    """Client options for a test: backoff in tens of milliseconds, a seeded random."""
    return {"initial_backoff": 0.02, "max_backoff": 0.2, "random": Random(22), **options}


async def test_a_reconnect_reset_in_the_handshake_is_tried_again(
    game: tuple[GameServer, Any], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = game
    caplog.set_level(logging.INFO, logger="mudgate.client")
    async with BlipProxy(("127.0.0.1", server.port)) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        async with Client(url, token_factory=lambda: server.token("alice"), **fast()) as alice:
            await alice.next("welcome", within=WAIT)
            await proxy.blip(refuse_for=0.3)
            assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
            await alice.send({"op": "ping", "id": 1})
            assert (await alice.next("pong", within=WAIT))["id"] == 1
    assert proxy.refused >= 1
    assert alice.reconnects == proxy.refused + 1
    assert "InvalidMessage" in caplog.text  # "did not receive a valid HTTP response"


async def test_a_reconnect_answered_503_is_tried_again(game: tuple[GameServer, Any]) -> None:
    server, _ = game
    async with Front(server.port) as front:
        alice = Client(front.url(), token_factory=lambda: server.token("alice"), **fast())
        async with alice:
            await alice.next("welcome", within=WAIT)
            front.next_answers = ["503", "503"]
            front.cut()
            await wait_for(lambda: alice.reconnects >= 1, timeout=WAIT)
            await alice.send({"op": "ping", "id": 2})  # waits for the connection
            assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
            assert (await alice.next("pong", within=WAIT))["id"] == 2
    assert front.next_answers == []
    assert alice.reconnects == 3


async def test_a_frame_waiting_for_a_reconnect_is_refused_when_the_client_closes(
    game: tuple[GameServer, Any],
) -> None:
    server, _ = game
    async with Front(server.port) as front:
        alice = Client(front.url(), token_factory=lambda: server.token("alice"), **fast())
        await alice.connect()
        await alice.next("welcome", within=WAIT)
        front.next_answers = ["silent"]
        front.cut()
        await wait_for(lambda: alice.reconnects >= 1, timeout=WAIT)
        sending = asyncio.ensure_future(alice.send({"op": "ping"}))
        await asyncio.sleep(0)
        await alice.close()
        with pytest.raises(Closed):
            await sending


async def test_a_reconnect_that_times_out_is_tried_again(game: tuple[GameServer, Any]) -> None:
    server, _ = game
    async with Front(server.port) as front:
        options = fast(open_timeout=0.1)
        alice = Client(front.url(), token_factory=lambda: server.token("alice"), **options)
        async with alice:
            await alice.next("welcome", within=WAIT)
            front.next_answers = ["silent"]
            front.cut()
            assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
    assert alice.reconnects == 2


async def test_a_reconnect_to_a_name_that_does_not_resolve_is_tried_again(
    game: tuple[GameServer, Any],
) -> None:
    unknown = "mudgate-test.invalid"  # RFC 2606: never resolves
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(unknown, 80), 1.0)
    except socket.gaierror:
        pass
    except TimeoutError:
        pytest.skip("the resolver takes seconds to fail here")
    else:
        pytest.skip(f"{unknown} resolves here")
    if time.monotonic() - started > 0.5:
        pytest.skip("the resolver is slow to fail here")
    server, _ = game
    async with Front(server.port) as front:
        alice = Client(front.url(), token_factory=lambda: server.token("alice"), **fast())
        async with alice:
            await alice.next("welcome", within=WAIT)
            alice.url = f"ws://{unknown}:{front.port}/ws"
            front.cut()
            await wait_for(lambda: alice.reconnects >= 2, timeout=WAIT)
            alice.url = front.url()
            assert (await alice.next("welcome", within=WAIT))["player"] == "alice"


async def test_the_first_connection_failing_in_the_handshake_is_an_error(
    game: tuple[GameServer, Any],
) -> None:
    server, _ = game
    async with Front(server.port) as front:
        front.next_answers = ["503"]
        client = Client(front.url(), token="t")
        with pytest.raises(InvalidStatus):
            await client.connect()
        await client.close()


async def test_a_failure_the_client_does_not_expect_ends_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that answers with something that is not JSON: nothing the client knows what
    # to do with, so the session ends (it does not hang, and it does not retry forever).
    async def handler(ws: ServerConnection) -> None:
        welcome = {"type": "event", "event": "welcome", "player": "alice", "room": "lobby"}
        await ws.send(json.dumps(welcome))
        await ws.send("this is not JSON")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with Client(f"ws://127.0.0.1:{port}/ws", token="t", **fast()) as alice:
            await alice.next("welcome", within=WAIT)
            async with asyncio.timeout(WAIT):
                left = [message async for message in alice]  # iteration ends, it does not hang
            assert left == []
            with pytest.raises(Closed) as closed:
                await alice.recv()
            assert isinstance(closed.value.__cause__, ValueError)
            with pytest.raises(Closed):
                await alice.send({"op": "ping"})
    assert "the client of" in caplog.text


# Resuming: where the client was, said on each reconnect; what it already got, dropped.


Script = tuple[list[dict[str, Any]], int, str]


class ScriptedServer:
    """A WebSocket server that plays one script a connection (messages to send, then a close
    code and reason) and keeps each handshake's query; past the scripts it stays silent."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.queries: list[dict[str, list[str]]] = []
        self.url = ""

    async def __aenter__(self) -> ScriptedServer:
        self._server = await serve(self._play, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/ws"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _play(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.queries.append(parse_qs(urlsplit(ws.request.path).query))
        if not self.scripts:
            await ws.wait_closed()
            return
        messages, code, reason = self.scripts.pop(0)
        for message in messages:
            await ws.send(json.dumps(message))
        await ws.close(code, reason)


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "event", "event": name, **fields}


def welcome(**fields: Any) -> dict[str, Any]:
    return event("welcome", player="alice", room="hall", **fields)


def say(offset: int, epoch: str = "ab", room: str = "hall") -> dict[str, Any]:
    return event("say", room=room, offset=offset, epoch=epoch, text=f"line {offset}")


def chat(offset: int, epoch: str = "cd") -> dict[str, Any]:
    return event("chat", channel="ooc", offset=offset, epoch=epoch, text=f"chat {offset}")


async def received(client: Client, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        return [await client.recv() for _ in range(count)]


async def test_a_reconnect_says_where_the_client_was_and_what_it_got_is_not_seen_again() -> None:
    first = [welcome(), say(4), say(5), event("subscribed", channel="ooc"), chat(7)]
    resumed_hall = event("resumed", room="hall", recovered=True, offset=6, epoch="ab", missed=1)
    resumed_ooc = event(
        "resumed", channel="ooc", recovered=True, offset=8, epoch="cd", missed=1, reason=None
    )
    second = [welcome(), say(5), say(6), resumed_hall, chat(7), chat(8), resumed_ooc, say(7)]
    async with (
        ScriptedServer((first, 1011, ""), (second, 1011, "")) as server,
        Client(server.url, token="t", **fast()) as alice,
    ):
        seen = await received(alice, len(first) + len(second) - 2)
        assert alice.positions == {"room:hall": (7, "ab"), "channel:ooc": (8, "cd")}
        assert alice.lost == 0
    assert [(m["event"], m.get("offset")) for m in seen] == [
        ("welcome", None),
        ("say", 4),
        ("say", 5),
        ("subscribed", None),
        ("chat", 7),
        ("welcome", None),
        ("say", 6),
        ("resumed", 6),
        ("chat", 8),
        ("resumed", 8),
        ("say", 7),
    ]
    assert "resume" not in server.queries[0]
    assert server.queries[1]["resume"] == ["room:hall:5:ab,channel:ooc:7:cd"]
    assert server.queries[1]["token"] == ["t"]


async def test_a_lost_gap_is_counted_and_the_new_epoch_taken() -> None:
    lost = event(
        "resumed", room="hall", recovered=False, offset=40, epoch="ef", reason="epoch_changed"
    )
    scripts: list[Script] = [
        ([welcome(), say(3)], 1011, ""),
        ([welcome(), lost, say(41, "ef")], 1011, ""),
    ]
    async with ScriptedServer(*scripts) as server, Client(server.url, token="t", **fast()) as alice:
        seen = await received(alice, 5)
        assert alice.lost == 1
        assert alice.positions == {"room:hall": (41, "ef")}
    assert seen[3]["recovered"] is False
    assert server.queries[1]["resume"] == ["room:hall:3:ab"]


async def test_the_welcome_says_over_how_long_a_restart_spreads_the_reconnect() -> None:
    draws = Recorder()
    scripts: list[Script] = [
        ([welcome(reconnect_window=0.3)], 1012, "service restart"),
        ([welcome()], 1000, ""),
    ]
    async with (
        ScriptedServer(*scripts) as server,
        Client(server.url, token="t", random=draws) as alice,
    ):
        await received(alice, 2)
    assert draws.windows() == [0.3]


async def test_positions_are_read_only() -> None:
    async with (
        ScriptedServer(([welcome(), say(1)], 1000, "")) as server,
        Client(server.url, token="t") as alice,
    ):
        await received(alice, 2)
        with pytest.raises(TypeError):
            alice.positions["room:hall"] = (9, "ab")  # type: ignore[index]
        assert alice.positions == {"room:hall": (1, "ab")}


async def test_a_reconnect_gets_back_what_its_room_and_channel_said_meanwhile(
    game: tuple[GameServer, Any],
) -> None:
    server, hub = game
    async with (
        Front(server.port) as front,
        Client(front.url(), token_factory=lambda: server.token("alice"), **fast()) as alice,
        server.player("bob") as bob,
    ):
        for player in (alice, bob):
            await player.next("welcome", within=WAIT)
            await player.send({"op": "go", "room": "hall"})
            await player.next("room", within=WAIT)
            await player.send({"op": "subscribe", "channel": "ooc"})
            await player.next("subscribed", within=WAIT)
        await bob.send({"op": "say", "text": "before"})
        await alice.next("say", within=WAIT)
        await bob.send({"op": "chat", "channel": "ooc", "text": "before"})
        await alice.next("chat", within=WAIT)
        front.next_answers = ["503"] * 1000  # alice cannot come back until cleared
        front.cut()
        await wait_for(lambda: "alice" not in hub.registry.players, timeout=WAIT)
        await bob.send({"op": "say", "text": "meanwhile"})
        await bob.send({"op": "chat", "channel": "ooc", "text": "meanwhile too"})
        await bob.next("chat", within=WAIT)
        front.next_answers.clear()
        welcome = await alice.next("welcome", within=WAIT)
        seen = [await alice.next("say", "chat", "resumed", within=WAIT) for _ in range(4)]
    assert welcome["room"] == "hall"  # put back where alice was
    assert [(m["event"], m.get("text"), m.get("recovered")) for m in seen] == [
        ("say", "meanwhile", None),
        ("resumed", None, True),
        ("chat", "meanwhile too", None),
        ("resumed", None, True),
    ]
    assert set(alice.positions) == {"room:hall", "channel:ooc"}
    assert alice.positions["room:hall"][0] == seen[1]["offset"]
    assert alice.lost == 0


async def test_a_channel_not_heard_from_yet_gets_back_what_it_said_meanwhile(
    game: tuple[GameServer, Any],
) -> None:
    server, hub = game
    async with (
        Front(server.port) as front,
        Client(front.url(), token_factory=lambda: server.token("alice"), **fast()) as alice,
        server.player("bob") as bob,
    ):
        for player in (alice, bob):
            await player.next("welcome", within=WAIT)
            await player.send({"op": "subscribe", "channel": "ooc"})
            await player.next("subscribed", within=WAIT)
        front.next_answers = ["503"] * 1000
        front.cut()
        await wait_for(lambda: "alice" not in hub.registry.players, timeout=WAIT)
        await bob.send({"op": "chat", "channel": "ooc", "text": "meanwhile"})
        await bob.next("chat", within=WAIT)
        front.next_answers.clear()
        await alice.next("welcome", within=WAIT)
        seen = [await alice.next("chat", "resumed", within=WAIT)]
        while seen[-1].get("channel") != "ooc" or seen[-1]["event"] != "resumed":
            seen.append(await alice.next("chat", "resumed", within=WAIT))
        assert [m["text"] for m in seen if m["event"] == "chat"] == ["meanwhile"]
        assert seen[-1]["recovered"] is True
        assert alice.lost == 0


def test_the_resume_string_is_one_the_server_reads() -> None:
    resume = Resume()
    for message in [welcome(), say(41), event("subscribed", channel="ooc"), chat(7, "0c1d2e3f")]:
        resume.observe(message)
    assert parse_resume(str(resume), max_entries=2) == [
        Position("room:hall", 41, "ab"),
        Position("channel:ooc", 7, "0c1d2e3f"),
    ]


def test_a_new_epoch_starts_the_offsets_over() -> None:
    resume = Resume()
    assert all(resume.observe(m) for m in [welcome(), say(9), say(1, "ef"), say(2, "ef")])
    assert not resume.observe(say(2, "ef"))
    assert dict(resume.positions) == {"room:hall": (2, "ef")}


def test_the_resume_string_follows_the_player_and_their_channels() -> None:
    resume = Resume()
    resume.observe(welcome())
    assert str(resume) == "room:hall:0:"  # nothing heard there yet
    resume.observe(say(3))
    resume.observe(event("arrive", room="kitchen", player="bob", offset=8, epoch="aa"))
    assert str(resume) == "room:hall:3:ab"  # bob arrived elsewhere, not alice
    resume.observe(event("arrive", room="kitchen", player="alice", offset=9, epoch="aa"))
    for message in [event("subscribed", channel="ooc"), event("subscribed", channel="news")]:
        resume.observe(message)
    resume.observe(event("chat", channel="trade", offset=2, epoch="bb", text="wts"))
    resume.observe(event("unsubscribed", channel="news"))
    assert str(resume) == "room:kitchen:9:aa,channel:ooc:0:,channel:trade:2:bb"
    assert dict(resume.positions) == {"room:kitchen": (9, "aa"), "channel:trade": (2, "bb")}


def test_events_without_a_position_are_always_kept() -> None:
    resume = Resume()
    resume.observe(welcome())
    plain = event("say", room="hall", text="no history")  # MUDGATE_ROOM_HISTORY_SIZE=0
    assert resume.observe(plain)
    assert resume.observe(plain)
    assert resume.observe(event("tell", text="hi"))
    assert resume.observe({"type": "error", "code": "unknown_op", "message": "?"})
    assert dict(resume.positions) == {}


def test_the_resume_string_leaves_out_channels_past_2048_bytes() -> None:
    resume = Resume()
    resume.observe(welcome())
    for number in range(100):
        resume.observe(event("subscribed", channel=f"channel-with-a-long-name-{number:03}"))
    text = str(resume)
    assert len(text) <= 2048
    assert text.startswith("room:hall:0:,channel:channel-with-a-long-name-000:0:")
    assert len(text.split(",")) < 101


async def test_a_token_factory_that_fails_once_is_asked_again_after_a_backoff() -> None:
    """After a 4001 the client asks its factory for a token; the token service is briefly
    down (the factory raises): the client backs off and asks again, as after any failed
    attempt."""
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        welcome = {"type": "event", "event": "welcome", "player": "p", "room": "lobby"}
        await ws.send(json.dumps(welcome))
        if connections == 1:
            await ws.close(4001, "token expired")
        else:
            await ws.wait_closed()

    calls = 0

    def factory() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("auth service answered 503")  # a blip of the token service
        return "t"

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = Client(f"ws://127.0.0.1:{port}/ws", token_factory=factory, initial_backoff=0.01)
        await client.connect()
        await client.next("welcome", within=2)
        try:
            second = await client.next("welcome", within=3)
        except Closed as closed:
            pytest.fail(f"the client ended for good after a token-service blip: {closed}")
        finally:
            await client.close()
        assert second["event"] == "welcome"
