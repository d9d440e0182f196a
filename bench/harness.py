"""What every benchmark shares: starting a contender's server, the machine, and the results.

Contenders run as separate processes under the same uvicorn settings; results go to
bench/results/<name>.json (or $MUDGATE_BENCH_RESULTS, where the smoke tests send them).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("MUDGATE_BENCH_RESULTS", ROOT / "bench" / "results"))
SECRET_KEY = "bench-secret-key-that-is-long-enough-for-hs256"
PEERS = {
    "bare-asgi": "bare_asgi:app",
    "fastapi-docs": "fastapi_docs:app",
    "socketio": "socketio_rooms:app",
}
# Node.js peers (bench/peers/node; `make bench` runs npm install there): one process each.
NODE_PEERS = {
    "node-ws": "ws_broadcast.js",
    "node-socketio": "socketio_rooms.js",
}
NODE_DIR = ROOT / "bench" / "peers" / "node"
# mudgate from another checkout (its src/ in $MUDGATE_BENCH_BASELINE), to compare before/after.
BASELINE = "mudgate-baseline"
T = TypeVar("T")
# What mudgate serve sets too (web/app.py server_config), with the bench's 60 s pings.
UVICORN = ["--ws", "websockets-sansio", "--ws-ping-interval", "60", "--ws-ping-timeout", "60"]


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run the load generator's event loop: uvloop's (as the servers' is), so the generator
    keeps up with the fastest server for longer on a shared machine."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main)
    return uvloop.run(main)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    contender: str, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``contender`` ("mudgate" or a peer) on ``port`` and wait until it listens."""
    baseline: dict[str, str] = {}
    if contender == BASELINE:
        # The same server from another checkout's source (bench --baseline): before vs after.
        baseline = {"PYTHONPATH": os.environ["MUDGATE_BENCH_BASELINE"]}
    if contender in ("mudgate", BASELINE):
        command = [sys.executable, "-m", "mudgate", "serve", "--port", str(port)]
        command += ["--log-level", "warning"]
    elif contender in NODE_PEERS:
        command = ["node", str(NODE_DIR / NODE_PEERS[contender]), str(port)]
    else:
        command = [sys.executable, "-m", "uvicorn", PEERS[contender], "--app-dir"]
        command += [str(ROOT / "bench" / "peers"), "--port", str(port), *UVICORN]
        command += ["--log-level", "warning"]
    return launch(command, port, baseline | (extra_env or {}), contender)


def environment(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The benchmarks' settings for a server (``extra_env`` over them)."""
    return (
        dict(os.environ)
        | {
            "MUDGATE_SECRET_KEY": SECRET_KEY,
            "MUDGATE_ADMIN_TOKEN": "bench-admin-token",
            "MUDGATE_MAX_RATE_LIMIT_ENTRIES": "1000000",
            # Benchmarks send as fast as they can; players are rate-limited.
            "MUDGATE_PLAYER_MESSAGES_PER_SECOND": "1000000",
            "MUDGATE_PLAYER_MESSAGE_BURST": "1000000",
            "MUDGATE_PING_INTERVAL": "60",
            "MUDGATE_PING_TIMEOUT": "60",
        }
        | (extra_env or {})
    )


def launch(
    command: list[str], port: int, extra_env: dict[str, str] | None = None, name: str = "server"
) -> subprocess.Popen[bytes]:
    """Run ``command`` with the benchmarks' settings (and ``extra_env`` over them) and wait
    until it listens on ``port``."""
    process = subprocess.Popen(command, env=environment(extra_env))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes and their children (a supervisor's workers)
    so far: the server's own cost, which other load on the machine does not change."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in (root, *root.children(recursive=True)):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def node_peers_installed() -> bool:
    """Whether the Node.js peers can run: node on the PATH and their packages installed."""
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").is_dir()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL for a server stuck on a client (the stalled benchmark's peer)."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def summary(values: Iterable[float], digits: int = 6) -> dict[str, float]:
    values = list(values)
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def write_result(name: str, payload: dict[str, Any]) -> None:
    """bench/results/<name>.json, with the machine it ran on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
    } | payload
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
