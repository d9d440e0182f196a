"""The composition root: what a Gateway builds, and how it starts, drains and stops."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from mudgate.auth import TokenError
from mudgate.gateway import Gateway, create_app, mount
from mudgate.protocol import CloseCode

from .conftest import RecordingConnection, make_settings, settle


def test_every_part_is_built_once_and_shared() -> None:
    gateway = Gateway(make_settings())
    assert gateway.hub.backplane is gateway.backplane
    assert gateway.janitor.hub is gateway.hub
    assert gateway.janitor.monitor is gateway.monitor
    watch = gateway.watch
    assert (watch.hub, watch.monitor, watch.janitor) == (
        gateway.hub,
        gateway.monitor,
        gateway.janitor,
    )
    assert (watch.levels, watch.history, watch.tracker, watch.notifier, watch.lag) == (
        gateway.levels,
        gateway.history,
        gateway.tracker,
        gateway.notifier,
        gateway.lag,
    )
    assert gateway.hub.clock is gateway.clock


def test_without_secrets_in_the_settings_each_gateway_makes_its_own() -> None:
    first = Gateway(make_settings(secret_key=None, admin_token=None))
    second = Gateway(make_settings(secret_key=None, admin_token=None))
    assert len(first.admin_token) >= 16
    assert first.admin_token != second.admin_token
    token = first.authenticator.issue("alice")
    assert first.authenticator.verify(token).player_id == "alice"
    with pytest.raises(TokenError):
        second.authenticator.verify(token)


async def test_drain_closes_every_player_with_the_code_given() -> None:
    gateway = Gateway(make_settings())
    await gateway.start()
    try:
        conn = RecordingConnection("alice", "127.0.0.1", gateway.hub.limits)
        gateway.hub.connect(conn)
        # The recording client never leaves by itself: drain waits its timeout, then drops it.
        await gateway.drain(CloseCode.SERVICE_RESTART, timeout_seconds=0.05)
        await settle()
        # A restart says when to come back: within MUDGATE_RECONNECT_WINDOW.
        assert conn.closed_with == (
            CloseCode.SERVICE_RESTART,
            "server restarting; reconnect within 5 s",
        )
        assert gateway.hub.connection_count() == 0
        assert gateway.hub.admit("bob", "127.0.0.1") is not None  # no newcomer meanwhile
    finally:
        await gateway.stop()


async def test_the_app_starts_and_stops_its_gateway_with_its_lifespan() -> None:
    gateway = Gateway(make_settings())
    app = create_app(gateway)
    async with app.router.lifespan_context(app):
        assert gateway.watch.history.points(3600)  # the first point, recorded at start
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http:
            assert (await http.get("/health/live")).status_code == 200
    assert gateway.hub.admit("alice", "127.0.0.1") is not None  # closed: refuses newcomers


async def test_a_mounted_gateway_starts_before_the_game_and_stops_after_it() -> None:
    gateway = Gateway(make_settings())
    seen: list[str] = []

    async def game_lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        seen.append("game up: gateway started" if gateway.watch.history.points(3600) else "")
        yield
        seen.append(
            "game down: gateway running" if gateway.hub.admit("x", "127.0.0.1") is None else ""
        )

    parent = FastAPI(lifespan=game_lifespan)
    mount(parent, "/mud", gateway)
    async with parent.router.lifespan_context(parent):
        pass
    assert seen == ["game up: gateway started", "game down: gateway running"]
