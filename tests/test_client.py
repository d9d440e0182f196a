"""mudgate.client against a real server (mudgate.testing): it talks, reconnects by close code,
gets a new token when refused, and stops when told to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mudgate import CloseCode, Gateway, create_app
from mudgate.client import Client, Closed
from mudgate.testing import GameServer, serve_game

from .conftest import make_settings
from .redis_server import free_port

WAIT = 5.0


@pytest.fixture
async def game() -> AsyncIterator[tuple[GameServer, Any]]:
    settings = make_settings()
    gateway = Gateway(settings)
    async with serve_game(create_app(gateway), gateway) as server:
        yield server, gateway.hub


def close_all(hub: Any, player_id: str, code: CloseCode) -> None:
    for conn in list(hub.registry.player_connections.get(player_id, ())):
        conn.close(code)


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


async def test_a_recycled_connection_comes_back_at_once(game: tuple[GameServer, Any]) -> None:
    server, hub = game
    async with server.player("alice") as alice:
        await alice.next("welcome", within=WAIT)
        close_all(hub, "alice", CloseCode.RECYCLED)
        assert (await alice.next("welcome", within=WAIT))["player"] == "alice"
        assert alice.reconnects == 1
        await alice.send({"op": "ping", "id": 7})
        assert (await alice.next("pong", within=WAIT))["id"] == 7


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
