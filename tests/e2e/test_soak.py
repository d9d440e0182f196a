"""``mudgate soak`` against a real server: it drives players, and reports what it saw."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mudgate.cli import main
from mudgate.tools.soak import (
    Sample,
    SoakConfig,
    SoakReport,
    parse_duration,
    run_soak,
    verdict,
)
from mudgate.tools.soak_report import write_report

from ..conftest import SECRET_KEY
from .server import RunningServer


def test_durations_read_as_people_write_them() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    for bad in ("", "soon", "0s", "-5m", "8d"):
        with pytest.raises(ValueError, match=r"duration|soak lasts"):
            parse_duration(bad)


def _report(rss: list[float], before: int = 0, after: int = 0) -> SoakReport:
    report = SoakReport(config={})
    report.samples = [Sample(at * 60.0, mb, 10, 10, 0, 0) for at, mb in enumerate(rss)]
    report.structures_before = {"online_players": before}
    report.structures_after = {"online_players": after}
    return report


def test_the_verdict_tells_flat_from_growing() -> None:
    noisy_flat = _report([80, 95, 96, 95.5, 96.2, 95.8, 96.1, 95.9, 96.3, 95.7, 96.0])
    verdict(noisy_flat, max_slope_mb_per_hour=10)
    assert noisy_flat.verdict == "flat"  # the warm-up jump does not count

    growing = _report([80 + 2 * minute for minute in range(11)])
    verdict(growing, max_slope_mb_per_hour=10)
    assert growing.verdict == "growing"
    assert growing.slope_mb_per_hour == pytest.approx(120)
    assert growing.r_squared == pytest.approx(1)

    leftover = _report([80] * 11, before=0, after=3)
    verdict(leftover, max_slope_mb_per_hour=10)
    assert leftover.verdict == "growing"
    assert "online_players holds 3 entries" in leftover.reasons[0]


@pytest.mark.slow
async def test_a_short_soak_drives_the_server_and_writes_its_report(
    server: RunningServer, tmp_path: Path
) -> None:
    config = SoakConfig(
        url=server.http_url,
        clients=12,
        duration_seconds=3.0,
        churn_rate=8.0,  # sessions of 1.5 s on average: several generations of players
        out=tmp_path / "report",
        secret_key=SECRET_KEY,
        think_seconds=0.05,
        sample_seconds=0.25,
        settle_seconds=1.0,
    )
    seen: list[float] = []
    report = await run_soak(config, lambda report, counters, elapsed: seen.append(elapsed))
    assert report.sessions > config.clients  # players came back after leaving
    assert report.vanished > 0
    assert report.sent > 100
    assert report.received > report.sent  # room messages fan out
    assert len(report.samples) >= 8
    assert seen  # the progress callback ran
    assert max(s.server_connections for s in report.samples) > 0
    assert report.structures_after["total_connections"] == 0
    assert report.structures_after["online_players"] == 0
    assert report.errors == {}
    assert report.verdict == "flat", report.reasons

    written = write_report(report, config.out)
    assert {path.name for path in written} == {"soak.json", "soak.md", "soak.png"}
    assert (config.out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document: dict[str, Any] = json.loads((config.out / "soak.json").read_text())
    assert document["verdict"] == "flat"
    assert document["config"]["secret_key"] is None  # never written down
    markdown = (config.out / "soak.md").read_text()
    assert "**flat**" in markdown
    assert "| online_players | 0 | 0 |" in markdown
    await asyncio.sleep(0)


def test_soak_says_what_to_do_without_a_server(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["soak", "--url", "http://127.0.0.1:9", "--duration", "1s", "--out", str(tmp_path)])
    assert "is mudgate running there?" in str(exit_.value.code)


def test_soak_refuses_a_bad_duration() -> None:
    with pytest.raises(SystemExit, match="--duration: not a duration"):
        main(["soak", "--duration", "forever"])


def test_refusals_come_with_what_to_do() -> None:
    report = _report([80] * 11)
    report.errors = {"ConnectionClosedError 4029": 12, "OSError": 1}
    verdict(report, max_slope_mb_per_hour=10)
    assert report.verdict == "flat"
    assert report.hints == [
        "12 connections refused as rate-limited (4029): every soak player comes from this one "
        "address; raise MUDGATE_MAX_RATE_LIMIT_ENTRIES on the server under test"
    ]
