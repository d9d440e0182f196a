from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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
