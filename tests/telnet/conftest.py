from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mudgate.gateway import Gateway

from ..conftest import make_settings
from ..e2e.server import RunningServer

TelnetServer = RunningServer


def telnet_port(server: RunningServer) -> int:
    telnet = server.gateway.telnet
    assert telnet is not None
    assert telnet.address is not None
    return telnet.address[1]


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start a real server with telnet on a free port: ``serve(**settings)``, or
    ``serve(gateway_options={...}, **settings)`` for a gateway with a hook or renderers."""
    servers: list[RunningServer] = []

    def start(gateway_options: dict[str, Any] | None = None, **overrides: Any) -> RunningServer:
        settings = make_settings(telnet_port=0, **overrides)
        server = RunningServer(settings, gateway=Gateway(settings, **(gateway_options or {})))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., RunningServer]) -> RunningServer:
    return serve()
