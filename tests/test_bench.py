"""Smoke runs of every benchmark with tiny sizes, so the harness cannot rot.

They check that each script runs end to end and writes its JSON; the figures are meaningless
at these sizes and go to a temporary directory, never over bench/results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "arguments", "result"),
    [
        ("idle_memory.py", ["--connections", "20", "--repeat", "1"], "idle_memory"),
        # Enough deliveries for every server to pass a few of the CPU clock's 10 ms ticks.
        ("broadcast.py", ["--players", "20", "--messages", "200", "--repeat", "1"], "broadcast"),
        ("stalled.py", ["--players", "10", "--seconds", "1", "--repeat", "1"], "stalled"),
        (
            "hostile.py",
            # A handful of connections per flood (--smoke): one attack from threads, and the
            # floods of a message arriving, each with code of its own.
            [
                *("--seconds", "0.5", "--smoke", "--attacks", "ping flood, never reads"),
                *("fragments (100)", "deflate (100) and a bomb", "slow bodies (50 players)"),
            ],
            "hostile",
        ),
        ("cleanup_cost.py", ["--repeat", "1", "--smoke"], "cleanup_cost"),
        (
            "fanout.py",
            ["--connections", "20", "--broadcasts", "50", "--repeat", "1"],
            "fanout",
        ),
        (
            "monitoring_overhead.py",
            ["--players", "10", "--messages", "50", "--repeat", "1"],
            "monitoring_overhead",
        ),
        (
            "tracemalloc_overhead.py",
            ["--repeat", "1", "--broadcasts", "100"],
            "tracemalloc_overhead",
        ),
        (
            "churn.py",
            ["--cycles", "200", "--processes", "2", "--concurrency", "5"],
            "churn",
        ),
        (
            "cluster_broadcast.py",
            ["--players", "10", "--messages", "50", "--repeat", "1"],
            "cluster_broadcast",
        ),
        (
            "game_split.py",
            ["--players", "5", "--rate", "200", "--commands", "200", "--repeat", "1"],
            "game_split",
        ),
        (
            "telnet_idle.py",
            ["--connections", "20", "--repeat", "1", "--kinds", "ws", "telnet", "telnet-mccp2"],
            "telnet_idle",
        ),
        (
            "telnet_delivery.py",
            ["--listeners", "10", "--rate", "200", "--messages", "200", "--repeat", "1"],
            "telnet_delivery",
        ),
        (
            "game_restart.py",
            ["--players", "20", "--warmup", "1", "--restarts", "1", "--after", "1"],
            "game_restart",
        ),
        (
            # One scenario: each restart waits for a new server to start (about 2 s here).
            "reconnect_spread.py",
            [
                *("--clients", "20", "--scenarios", "at-sigterm"),
                *("--shutdown-timeout", "1", "--window", "0.5"),
            ],
            "reconnect_spread",
        ),
    ],
)
def test_the_benchmark_runs(tmp_path: Path, script: str, arguments: list[str], result: str) -> None:
    env = os.environ | {"MUDGATE_BENCH_RESULTS": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    written = json.loads((tmp_path / f"{result}.json").read_text())
    assert written["benchmark"] == result
    assert written["machine"]["cores"] >= 1
    if result == "broadcast":
        # Every peer ran, the Node.js ones included (`make test` installs them as `make
        # bench` does), each with the server's CPU per delivery.
        for by_server in written["results"].values():
            assert set(by_server) == {
                "mudgate", "fastapi-docs", "socketio", "node-ws", "node-socketio"
            }, completed.stdout  # fmt: skip
            assert all(r["server_cpu_us_per_delivery"] > 0 for r in by_server.values())
    if result == "hostile":
        # Both contenders met every flood, and mudgate's budget was read for each.
        for by_server in written["results"].values():
            assert set(by_server) == {"mudgate", "fastapi-docs"}
            assert by_server["mudgate"]["budget"]["worst_case_mib"] > 0
    if result in ("telnet_idle", "telnet_delivery"):
        # Every kind ran, and its telnet clients got every line (MCCP2's through zlib).
        assert set(written["results"]) >= {"ws", "telnet", "telnet-mccp2"}
    if result == "telnet_delivery":
        assert all(r["missing"] == 0 for r in written["results"].values())
    if result == "reconnect_spread":
        # Every client came back after each restart, with jitter and without.
        for name in ("at-sigterm/jitter", "at-sigterm/no-jitter"):
            assert [run["welcomed"] for run in written["runs"][name]] == [20]
    if result == "cluster_broadcast":
        assert "workers-2" in written["results"]


def test_the_report_is_written_from_results(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH / "report.py")], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    report = (BENCH.parent / "BENCHMARKS.md").read_text()
    assert "## Idle connections" in report
