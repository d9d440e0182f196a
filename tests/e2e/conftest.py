from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from ..conftest import make_settings
from .server import RunningServer, running_server


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with running_server(make_settings(ping_interval=5, ping_timeout=5)) as server:
        yield server


@pytest.fixture
def server_with() -> Iterator[Any]:
    """Start a server with particular settings: ``server_with(max_connections=1)``."""
    servers: list[Any] = []

    def start(clock: Any = None, **overrides: Any) -> RunningServer:
        context = running_server(make_settings(**overrides), clock)
        servers.append(context)
        return context.__enter__()

    yield start
    for context in servers:
        context.__exit__(None, None, None)


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
