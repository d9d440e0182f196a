"""The monitoring API against a real server: counts, the janitor, forced cleanup, shedding."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
from typing import Any

import httpx
import psutil
import pytest

from ..conftest import ADMIN_TOKEN
from .clients import Player
from .server import RunningServer, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def get(server: RunningServer, path: str, **options: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await http.get(path, **options)


async def memory(server: RunningServer) -> dict[str, Any]:
    response = await get(server, "/monitoring/memory")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_memory_reports_every_connection_and_structure(server: RunningServer) -> None:
    players = [await Player.connect(server.ws(f"p{i}")) for i in range(100)]
    async with contextlib.AsyncExitStack() as streams:
        http = await streams.enter_async_context(
            httpx.AsyncClient(base_url=server.http_url, timeout=10)
        )
        for i in range(20):
            await streams.enter_async_context(
                http.stream("GET", "/events", params={"token": server.token(f"s{i}")})
            )
        await wait_for(lambda: server.stats()["total_connections"] == 120)
        report = await memory(server)
        assert report["connections"] == {
            "active_websockets": 100,
            "active_sse": 20,
            "active_telnet": 0,
            "total_connections": 120,
            "player_websockets": 120,
            "connection_timestamps": 120,
        }
        assert report["data_structures"]["online_players"] == 120
        assert report["memory"]["rss_mb"] > 0
        assert 0 < report["memory"]["percent"] < 100
        assert report["memory"]["limit_source"] in {
            "physical",
            "configured",
            "cgroup-v1",
            "cgroup-v2",
        }
        assert report["memory_monitor"]["cleanup_interval"] == 300
        assert report["memory_monitor"]["memory_threshold"] == 0.8
        assert set(report["cleanup_stats"]) >= {
            "last_cleanup",
            "cleanups_performed",
            "memory_cleanups",
            "time_cleanups",
            "forced_cleanups",
        }
        budget = report["memory_budget"]
        assert {line["structure"] for line in budget["lines"]} >= {
            "connections",
            "pending_messages",
        }
        assert budget["total_mb"] == pytest.approx(
            sum(line["worst_case_mb"] for line in budget["lines"]), abs=0.1
        )
        await asyncio.gather(*(player.close() for player in players))
    await wait_for(lambda: server.stats()["total_connections"] == 0)
    report = await memory(server)
    assert set(report["connections"].values()) == {0}
    structures = report["data_structures"]
    assert structures["online_players"] == structures["room_occupants"] == 0
    assert structures["room_subscriptions"] == structures["pending_messages"] == 0


async def test_the_janitor_recycles_connections_past_their_age(server_with: Any) -> None:
    # MUDGATE_MAX_CONNECTION_AGE at half a second rather than 2 s: the same path, faster.
    server: RunningServer = server_with(
        max_connection_age=0.5, cleanup_interval=0.1, check_interval=0.05
    )
    player = await Player.connect(server.ws("alice"))
    assert await player.closed(timeout=10) == 4010
    assert player.ws.close_reason == "recycled"
    await wait_for(lambda: server.stats()["total_connections"] == 0)
    report = await memory(server)
    assert report["cleanup_stats"]["removed"]["stale_connections"] >= 1
    assert report["cleanup_stats"]["time_cleanups"] >= 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Basic x"}, 401)],
)
async def test_forced_cleanup_needs_the_admin_token(
    server: RunningServer, headers: dict[str, str], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/monitoring/memory/cleanup", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] in {"unauthorized", "forbidden"}
    assert "refused" in caplog.text


async def test_forced_cleanup_reports_and_is_rate_limited(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        dry = await http.post("/monitoring/memory/cleanup?dry_run=true", headers=ADMIN)
        again = await http.post("/monitoring/memory/cleanup", headers=ADMIN)
    assert dry.status_code == 200
    body = dry.json()
    assert body["dry_run"] is True
    assert body["trigger"] == "forced"
    assert set(body["removed"]) == {
        "connection_attempts",
        "message_rate_limits",
        "last_seen",
        "pending_messages",
        "room_history",
        "left_rooms",
        "stale_connections",
        "orphans",
    }
    assert {"memory_before_mb", "memory_after_mb", "duration_seconds"} <= set(body)
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) >= 1
    assert "forced cleanup" in caplog.text


async def test_a_forced_cleanup_updates_the_stats(server_with: Any) -> None:
    server: RunningServer = server_with(forced_cleanup_min_interval=0)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post("/monitoring/memory/cleanup", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["dry_run"] is False
    report = await memory(server)
    stats = report["cleanup_stats"]
    assert (stats["forced_cleanups"], stats["cleanups_performed"]) == (1, 1)
    # The original system's shape: epoch seconds; the ISO form beside it.
    assert isinstance(stats["last_cleanup"], float)
    started = datetime.datetime.fromisoformat(stats["last_cleanup_iso"])
    assert started.timestamp() == pytest.approx(stats["last_cleanup"])
    monitor = report["memory_monitor"]
    assert (monitor["max_connection_age"], monitor["idle_timeout"]) == (
        server.settings.max_connection_age,
        server.settings.idle_timeout,
    )


async def test_commands_report_the_slowest_ops_with_their_counts_and_errors(
    server: RunningServer,
) -> None:
    assert (await get(server, "/monitoring/commands")).json() == {
        "total": 0,
        "errors": 0,
        "slowest": [],
    }
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        for i in range(3):
            await alice.send(op="ping", id=i)
            await alice.next("pong")
        await alice.send(op="chat", channel="nowhere", text="hi", id=9)
        assert (await alice.next("error"))["code"] == "not_subscribed"
    report = (await get(server, "/monitoring/commands")).json()
    assert (report["total"], report["errors"]) == (4, 1)
    rows = {row["op"]: row for row in report["slowest"]}
    assert (rows["ping"]["count"], rows["ping"]["errors"]) == (3, 0)
    assert rows["chat"]["errors_by_code"] == {"not_subscribed": 1}
    assert all(0 < row["p50_seconds"] <= row["p99_seconds"] for row in rows.values())
    p99s = [row["p99_seconds"] for row in report["slowest"]]
    assert p99s == sorted(p99s, reverse=True)
    assert len((await get(server, "/monitoring/commands?limit=1")).json()["slowest"]) == 1
    assert (await get(server, "/monitoring/commands?limit=0")).status_code == 422


async def test_health_probes(server: RunningServer) -> None:
    assert (await get(server, "/health/live")).json() == {"status": "ok", "detail": None}
    ready = await get(server, "/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


async def test_alerts_have_the_operators_shape(server_with: Any) -> None:
    server: RunningServer = server_with(large_structure_threshold=1)
    async with await Player.connect(server.ws("alice")), await Player.connect(server.ws("bob")):
        response = await get(server, "/monitoring/memory-alerts")
    body = response.json()
    assert body["alert_count"] == len(body["alerts"]) == len(body["details"])
    assert "WARNING: Large data structure online_players with 2 entries" in body["alerts"]
    assert body["timestamp"].endswith("+00:00")
    detail = next(d for d in body["details"] if d["code"] == "LARGE_STRUCTURE")
    assert (detail["level"], detail["threshold"]) == ("WARNING", 1)


async def test_critical_memory_refuses_new_players_and_keeps_the_old_ones(
    server_with: Any,
) -> None:
    # The server runs in this process: its RSS is ours. Set a limit that puts us at 65 %,
    # then allocate past 90 % and free it again.
    gc.collect()
    rss = psutil.Process().memory_info().rss
    limit = rss / 0.65
    server: RunningServer = server_with(
        memory_limit_mb=limit / 2**20,
        check_interval=0.02,
        memory_alert_hold=0,
        pressure_cleanup_cooldown=3600,
    )
    alice = await Player.connect(server.ws("alice"))
    await alice.next("welcome")
    assert (await get(server, "/health/ready")).status_code == 200

    # Zero-filled pages: RSS really grows, well past 90 % even if the pressure cleanup hands
    # memory earlier tests freed back to the OS.
    ballast = bytearray(int(limit * 0.6))
    await wait_for(lambda: server.hub.shedding)
    ready = await get(server, "/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (503, "shedding")
    refused = await Player.connect(server.ws("bob"))
    assert await refused.closed() == 1013
    sse = await get(server, "/events", params={"token": server.token("carol")})
    assert sse.status_code == 503
    assert sse.headers["retry-after"] == "30"
    alerts = (await get(server, "/monitoring/memory-alerts")).json()["alerts"]
    assert any(alert.startswith("CRITICAL: Memory usage at") for alert in alerts)
    # Existing players keep playing.
    await alice.send(op="ping", id="still")
    assert (await alice.next("pong"))["id"] == "still"
    assert (await get(server, "/health/live")).status_code == 200

    del ballast
    await wait_for(lambda: not server.hub.shedding)
    assert (await get(server, "/health/ready")).status_code == 200
    async with await Player.connect(server.ws("bob")) as bob:
        assert (await bob.next("welcome"))["player"] == "bob"
    await alice.close()
