"""The operators' view against a real server: metrics, notifications, diagnostics, leaks."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import ADMIN_TOKEN, FakeClock, make_settings
from .clients import Player
from .receiver import receiving
from .server import RunningServer, running_server, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def scrape(server: RunningServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name]
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()) and sample.name in (
            name,
            f"{name}_total",
        ):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


async def test_metrics_parse_and_follow_the_gateway(server: RunningServer) -> None:
    before = await scrape(server)
    for name in (
        "mudgate_connections",
        "mudgate_structure_entries",
        "mudgate_memory_percent",
        "mudgate_memory_limit_bytes",
        "mudgate_cleanups",
        "mudgate_cleanup_duration_seconds",
        "mudgate_evictions",
        "mudgate_slow_consumer_disconnects",
        "mudgate_refused_connections",
        "mudgate_alerts_fired",
        "process_resident_memory_bytes",
        "python_gc_objects_collected",
    ):
        assert name in before, name
    assert before["mudgate_cleanups"].type == "counter"
    assert before["mudgate_cleanup_duration_seconds"].type == "histogram"
    assert value(before, "mudgate_connections", transport="websocket") == 0
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        during = await scrape(server)
        assert value(during, "mudgate_connections", transport="websocket") == 1
        assert value(during, "mudgate_structure_entries", structure="online_players") == 1
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await http.post("/monitoring/memory/cleanup", headers=ADMIN)
    after = await scrape(server)
    assert value(after, "mudgate_cleanups", trigger="forced") == 1
    assert value(after, "mudgate_connections_opened") == 1


async def test_metrics_answer_at_exactly_their_path(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/metrics/")
    assert response.status_code in (404, 307)
    assert await scrape(server)  # and /metrics itself answers 200, no redirect


async def test_each_command_is_counted_and_timed_by_op_and_error_code(
    server: RunningServer,
) -> None:
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        await alice.send(op="ping", id=1)
        await alice.next("pong")
        await alice.send(op="tell", to="nobody", text="hello?", id=2)
        assert (await alice.next("error"))["code"] == "player_not_found"
        await alice.send(op="xyzzy", id=3)
        assert (await alice.next("error"))["code"] == "unknown_op"
    families = await scrape(server)
    assert families["mudgate_commands"].type == "counter"
    assert value(families, "mudgate_commands", op="ping") == 1
    assert value(families, "mudgate_commands", op="tell") == 1
    assert value(families, "mudgate_command_errors", op="tell", code="player_not_found") == 1
    # An op nobody registered is counted, but never gets a label of its own.
    assert value(families, "mudgate_command_errors", op="(unknown)", code="unknown_op") == 1
    ops = {sample.labels.get("op") for f in families.values() for sample in f.samples}
    assert "xyzzy" not in ops
    durations = families["mudgate_command_duration_seconds"]
    assert durations.type == "histogram"
    ping = {
        (sample.name, sample.labels.get("le")): sample.value
        for sample in durations.samples
        if sample.labels["op"] == "ping"
    }
    assert ping[("mudgate_command_duration_seconds_bucket", "+Inf")] == 1
    assert ping[("mudgate_command_duration_seconds_count", None)] == 1
    assert 0 < ping[("mudgate_command_duration_seconds_sum", None)] < 5
    assert ("mudgate_command_duration_seconds_bucket", "0.0005") in ping


async def test_webhooks_hear_alerts_start_and_resolve() -> None:
    with (
        receiving() as (receiver, url),
        running_server(
            make_settings(
                alert_webhooks=[url],
                large_structure_threshold=1,
                check_interval=0.02,
                memory_alert_hold=0,
                node_name="node-a",
            )
        ) as server,
    ):
        players = [await Player.connect(server.ws(name)) for name in ("alice", "bob")]

        # online_players, which empties when they leave (connection_attempts and last_seen,
        # which also pass the threshold, keep their entries until their TTL, and can fire
        # first on a slow machine: waiting for "any" alert raced with that).
        def about_online_players(status: str) -> list[dict[str, Any]]:
            return [
                p
                for p in receiver.received
                if p["status"] == status and "online_players" in p["message"]
            ]

        await wait_for(lambda: about_online_players("firing"))
        firing = about_online_players("firing")[0]
        assert firing["code"] == "LARGE_STRUCTURE"
        assert firing["level"] == "WARNING"
        assert firing["node"] == "node-a"
        assert firing["text"].startswith("[mudgate node-a] WARNING: Large data structure")
        assert {"message", "value", "threshold", "timestamp"} <= set(firing)
        await asyncio.gather(*(player.close() for player in players))
        await wait_for(lambda: about_online_players("resolved"))
        fired = value(await scrape(server), "mudgate_alerts_fired", code="LARGE_STRUCTURE")
        assert fired >= 1
        assert value(await scrape(server), "mudgate_notifications", outcome="sent") >= 2


async def test_a_dead_webhook_does_not_hold_the_server_up(server_with: Any) -> None:
    server: RunningServer = server_with(
        alert_webhooks=["http://127.0.0.1:9/dead"],
        webhook_retries=1,
        webhook_timeout=0.5,
        large_structure_threshold=1,
        check_interval=0.02,
    )
    players = [await Player.connect(server.ws(name)) for name in ("alice", "bob")]
    await wait_for(lambda: server.gateway.watch.notifier.failed >= 1, timeout=15)
    async with await Player.connect(server.ws("carol")) as carol:
        await carol.send(op="ping", id=1)
        assert (await carol.next("pong"))["id"] == 1
    await asyncio.gather(*(player.close() for player in players))


async def test_tracemalloc_is_admin_only_and_shows_what_grew(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        assert (await http.post("/monitoring/memory/tracemalloc/start")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get("/monitoring/memory/top", headers=wrong)).status_code == 403
        assert (await http.get("/monitoring/memory/top", headers=ADMIN)).status_code == 409
        started = await http.post("/monitoring/memory/tracemalloc/start", headers=ADMIN)
        assert started.json()["tracing"] is True
        again = await http.post("/monitoring/memory/tracemalloc/start", headers=ADMIN)
        assert again.status_code == 409
        hoard = [bytearray(1000) for _ in range(2000)]  # about 2 MB from this line
        top = (await http.get("/monitoring/memory/top?limit=5", headers=ADMIN)).json()["sites"]
        assert any("test_operators.py" in site["location"] for site in top)
        assert top[0]["size_diff_bytes"] >= 1_000_000
        del hoard
        stopped = await http.post("/monitoring/memory/tracemalloc/stop", headers=ADMIN)
        assert stopped.json()["tracing"] is False
        objects = await http.get("/monitoring/memory/objects?limit=5", headers=ADMIN)
        assert len(objects.json()["objects"]) == 5
        assert (await http.get("/monitoring/memory/objects", headers=ADMIN)).status_code == 429


async def test_a_simulated_leak_is_reported_and_alerted(server_with: Any) -> None:
    # Time is the injected clock: an hour of sampling passes without sleeping.
    clock = FakeClock(start=6000.0)
    server: RunningServer = server_with(
        clock=clock, trend_warmup=0, check_interval=3600, memory_alert_hold=0
    )
    watch = server.gateway.watch
    leak: list[bytes] = []  # the test-only hook: a list that only grows
    for _ in range(30):
        leak.extend(bytes(1024) for _ in range(2048))  # 2 MiB a minute: 120 MiB/h
        for _ in range(6):
            clock.advance(10)
            server.run(watch.check())
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        trend = (await http.get("/monitoring/memory/trend")).json()
        alerts = (await http.get("/monitoring/memory-alerts")).json()
        history = (await http.get("/monitoring/memory/history?window=3600")).json()
    assert trend["leak_suspected"] is True, trend
    assert trend["slope_mb_per_hour"] > 60
    assert trend["r_squared"] > 0.9
    assert any(alert.startswith("WARNING: Leak suspected") for alert in alerts["alerts"])
    assert "LEAK_SUSPECTED" in [detail["code"] for detail in alerts["details"]]
    assert len(history["points"]) == 1 + 180  # the point taken at start, then one per check
    assert history["points"][-1]["rss_mb"] > history["points"][0]["rss_mb"] + 50
    del leak


@pytest.mark.parametrize("window", ["0", "-5", "100000", "soon"])
async def test_history_windows_are_validated(server: RunningServer, window: str) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get(f"/monitoring/memory/history?window={window}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_args"
    assert error["message"].startswith("query.window: ")
