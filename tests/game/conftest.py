"""A real ``mudgate serve --game`` (the gateway, and the game in a process of its own) and
players to drive it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ..e2e.clients import Player
from ..hostile.gateway import Gateway

SAMPLE = Path(__file__).with_name("sample_game.py")


class LinkedGateway(Gateway):
    """The gateway with a game behind it; what the tests ask of the game's state."""

    def game(self) -> dict[str, Any]:
        state: dict[str, Any] = self.get("/monitoring/game")
        return state

    async def until(self, check: Any, timeout: float = 20.0) -> dict[str, Any]:
        """Poll /monitoring/game until ``check(state)``; the state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.game()
            if check(state):
                return state
            assert time.monotonic() < deadline, f"never true; last {state}\n{self.logs()[-3000:]}"
            await asyncio.sleep(0.05)

    async def ready(self, timeout: float = 20.0) -> dict[str, Any]:
        return await self.until(lambda state: state["state"] == "ready", timeout)

    def text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return str(response.read().decode())

    def sighup(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    @asynccontextmanager
    async def player(self, name: str) -> AsyncIterator[Player]:
        async with await Player.connect(self.ws(name)) as player:
            await player.next("welcome")
            yield player


def edit(
    path: Path, old: str = "", new: str = "", *, append: str = "", text: str | None = None
) -> None:
    """Change a game's source as a developer saving a file does."""
    source = path.read_text() if text is None else text
    path.write_text(source.replace(old, new) + append if old else source + append)


@pytest.fixture
def game_copy(tmp_path: Path) -> Path:
    """A copy of the sample game as a module of its own (``linked_sample``), to rewrite."""
    module = tmp_path / "linked_sample.py"
    module.write_text(SAMPLE.read_text())
    return module


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[Any]:
    """Start gateways with a game; each is stopped (SIGTERM) at the end of the test."""
    started: list[LinkedGateway] = []

    def start(game: str = "tests.game.sample_game:game", **settings: object) -> LinkedGateway:
        gateway = LinkedGateway(tmp_path / f"gateway-{len(started)}.log", game=game, **settings)
        # The game's module may be a copy in tmp_path; the repository for mudgate and tests.
        gateway.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.getcwd()])
        started.append(gateway)
        return gateway.start()  # type: ignore[return-value]

    yield start
    for gateway in started:
        gateway.stop()
