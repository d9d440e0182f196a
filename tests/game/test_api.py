"""``mudgate.Game`` in the gateway's process: its hooks, its timers (once per cluster, or on
each node), ``on_start``, and a game's per-player state; a timer's failure is logged."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from mudgate import Game, Gateway, Hub
from mudgate.game.api import Timer

from ..conftest import FakeClock, connect, make_settings, settle


class Leases:
    """A hub whose lease answers are scripted (the backplane's own are tested with Redis)."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, float]] = []
        self.ran = 0

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        self.asked.append((name, ttl_seconds))
        return self.answers.pop(0)


async def test_a_timer_runs_once_per_cluster_where_the_lease_is_held() -> None:
    game = Game(name="castle")
    runs: list[object] = []

    @game.every(30)
    def bard(hub: Hub) -> None:
        runs.append(hub)

    timer = game.timers[0]
    hub: Any = Leases(True, False)
    assert await game.tick(timer, hub, "timer:castle:bard")
    assert not await game.tick(timer, hub, "timer:castle:bard")  # another node holds it
    assert runs == [hub]
    # Held for two periods and a second: a live holder renews in time, a dead one is replaced.
    assert hub.asked == [("timer:castle:bard", 61.0)] * 2


async def test_a_timer_on_each_node_asks_for_no_lease() -> None:
    game = Game()
    runs: list[int] = []

    @game.every(1, each_node=True)
    async def sweep(hub: Hub) -> None:
        runs.append(1)

    hub: Any = Leases()
    assert await game.tick(game.timers[0], hub, "unused")
    assert runs == [1]
    assert hub.asked == []


async def test_a_failing_timer_is_logged_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    game = Game()

    @game.every(5)
    def weather(hub: Hub) -> None:
        hub.room_event("yard", "weather", room="yard")  # the hub sets room itself

    real = Hub(make_settings())
    real.hold_lease = Leases(True).hold_lease  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "mudgate.game"):
        assert await game.tick(game.timers[0], real, "timer:game:weather")
    record = caplog.records[-1]
    assert "timer" in record.getMessage()
    assert "weather" in record.getMessage()
    assert record.exc_info is not None
    assert "the hub sets 'room' itself" in str(record.exc_info[1])


def test_timers_are_checked_when_declared() -> None:
    game = Game()
    with pytest.raises(ValueError, match="positive"):
        game.every(0)
    game.every(1)(lambda hub: None)
    with pytest.raises(ValueError, match="already registered"):
        game.every(2)(lambda hub: None)
    assert isinstance(game.timers[0], Timer)
    with pytest.raises(RuntimeError, match="has not started"):
        _ = game.hub


async def test_a_game_in_the_gateways_process(clock: FakeClock) -> None:
    game = Game(name="inn")
    started: list[Hub] = []

    @game.on_start
    async def load(hub: Hub) -> None:
        started.append(hub)

    @game.hooks.on_connect
    def greet(player_id: str) -> None:
        game.hub.send(player_id, "narrate", text=f"The innkeeper nods at {player_id}.")

    @game.every(3600)
    def never(hub: Hub) -> None:  # started with the gateway, stopped with it
        pass

    gateway = Gateway(make_settings(), game=game, clock=clock)
    assert gateway.commands is game.commands
    async with gateway.running():
        assert started == [gateway.hub]
        assert game.hub is gateway.hub
        alice = connect(gateway.hub, "alice")
        await settle()
        assert json.loads(alice.written[-1].data)["text"] == "The innkeeper nods at alice."
        assert len(game._running) == 1
        gateway.hub.disconnect(alice)
    assert game._running == []


def test_a_game_runs_in_one_place() -> None:
    game = Game()
    with pytest.raises(ValueError, match="not both"):
        Gateway(make_settings(), game=game, commands=game.commands)
    with pytest.raises(ValueError, match="not both"):
        Gateway(make_settings(game="examples.castle.game:game"), game=game)


async def test_a_players_state_is_kept_bounded(clock: FakeClock) -> None:
    hub = Hub(make_settings(max_player_state_bytes=64), clock=clock)
    await hub.start()
    connect(hub, "alice")
    hub.save_state("alice", {"hp": 10, "quest": "rat"})
    state = hub.state_of("alice")
    state["hp"] = 0  # a copy
    assert hub.state_of("alice") == {"hp": 10, "quest": "rat"}
    with pytest.raises(ValueError, match="at most 64 bytes"):
        hub.save_state("alice", {"notes": "x" * 100})
    with pytest.raises(ValueError, match="JSON object"):
        hub.save_state("alice", {"when": object()})
    with pytest.raises(ValueError, match="not online"):
        hub.save_state("bob", {})
    assert hub.state_of("bob") == {}
    await hub.close(timeout_seconds=0.01)


async def test_a_games_task_that_fails_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    game = Game()

    async def weather() -> None:
        raise TypeError("room_event() got multiple values for keyword argument 'room'")

    with caplog.at_level(logging.ERROR, "mudgate.game"):
        task = game.spawn(weather(), name="weather")
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert caplog.records[-1].getMessage() == "the game's task weather failed"
    assert "multiple values" in str(caplog.records[-1].exc_info[1])  # type: ignore[index]
    assert game._running == []


def test_the_budget_counts_what_the_game_link_reads_ahead() -> None:
    from mudgate.game.link import LINK_READ_QUEUE  # noqa: PLC0415
    from mudgate.memory.budget import GAME_LINK_READ_QUEUE, memory_budget  # noqa: PLC0415

    assert LINK_READ_QUEUE == GAME_LINK_READ_QUEUE
    settings = make_settings(game="castle:game")
    lines = {line.structure: line for line in memory_budget(settings, 2**30, 50 * 2**20).lines}
    link = lines["game_link"]
    assert link.worst_case_bytes == (
        settings.game_queue_bytes
        + settings.game_link_buffer_bytes
        + (LINK_READ_QUEUE + 1) * settings.game_link_max_frame_bytes
    )
    assert lines["game_process"].worst_case_bytes == 50 * 2**20
    assert lines["player_state"].max_entries == settings.max_players
    assert memory_budget(make_settings(), 2**30).lines[-1].worst_case_bytes == 0  # no game
