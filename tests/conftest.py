"""Fixtures shared by the tests: small settings, a controllable clock, a fake connection, a
redis-server and Debian's Chromium of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from playwright.async_api import Browser, async_playwright

from mudgate.connection import Connection
from mudgate.hub import Hub
from mudgate.protocol import CloseCode, Outgoing
from mudgate.settings import Settings

from .redis_server import RedisServer

SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256"
ADMIN_TOKEN = "admin-token-for-the-tests"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingTransport:
    """A client that is a list: what was written to it, and how it was closed. ``block``, when
    set, holds every write until it is."""

    name: ClassVar[str] = "websocket"

    def __init__(self) -> None:
        self.written: list[Outgoing] = []
        self.closed_with: tuple[CloseCode, str] | None = None
        self.block: asyncio.Event | None = None

    def write_now(self, message: Outgoing) -> bool:
        return False

    async def write(self, message: Outgoing) -> None:
        if self.block is not None:
            await self.block.wait()
        self.written.append(message)

    async def write_close(self, code: CloseCode, reason: str) -> None:
        self.closed_with = (code, reason)

    def release(self) -> None:
        pass


class RecordingConnection(Connection):
    """A connection over a ``RecordingTransport``, which the test reads through it."""

    __slots__ = ()

    transport: RecordingTransport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No handler task to cancel: abort() below records it instead.
        super().__init__(*args, **{"handler": None, "transport": RecordingTransport(), **kwargs})

    @property
    def written(self) -> list[Outgoing]:
        return self.transport.written

    @property
    def closed_with(self) -> tuple[CloseCode, str] | None:
        return self.transport.closed_with

    @property
    def block(self) -> asyncio.Event | None:
        return self.transport.block

    @block.setter
    def block(self, event: asyncio.Event | None) -> None:
        self.transport.block = event

    def abort(self) -> None:
        # The handler task of a real transport; here it would be the test itself.
        transport = self.transport
        transport.closed_with = transport.closed_with or (CloseCode.GOING_AWAY, "aborted")

    def events(self) -> list[str]:
        return [message.event for message in self.written]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"secret_key": SECRET_KEY, "admin_token": ADMIN_TOKEN}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def hub(settings: Settings, clock: FakeClock) -> Hub:
    hub = Hub(settings, clock=clock, wall_clock=lambda: 1_800_000_000.0)
    await hub.start()
    return hub


def connect(hub: Hub, player_id: str, remote: str = "127.0.0.1") -> RecordingConnection:
    conn = RecordingConnection(player_id, remote, hub.limits, clock=hub.clock)
    hub.connect(conn)
    return conn


async def settle() -> None:
    """Let writer tasks run until every outbox is drained."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free port."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium driven by Playwright (which cannot download its own browsers here)."""
    assert CHROMIUM.is_file(), "Debian's chromium is missing: `make test` installs it as root"  # noqa: ASYNC240
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()
