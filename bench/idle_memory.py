"""Server RSS per idle connection: mudgate vs the bare-ASGI floor under the same uvicorn.

Each run starts a fresh server process, warms it up, opens N connections that each wait for
their first event and then stay idle, and reads the server's RSS before and after. Contenders
alternate within one invocation; the result is the median (with min and max) over repeats.

    python bench/idle_memory.py [--connections 2000] [--repeat 3] [--transports ws sse]
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import SECRET_KEY, free_port, start, stop, write_result

from mudgate.auth import Authenticator

CONTENDERS = ("mudgate", "bare-asgi")


def open_connection(port: int, transport: str, token: str) -> socket.socket:
    """A client that reads the handshake and the first event, then sits idle."""
    sock = socket.create_connection(("127.0.0.1", port))
    if transport == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        marker = b"welcome"
    else:
        request = f"GET /events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n"
        marker = b"welcome"
    sock.sendall(request.encode())
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"server closed a {transport} connection: {received[:200]!r}")
        received += chunk
    return sock


def measure(contender: str, transport: str, connections: int) -> float:
    """KiB of server RSS per idle connection."""
    port = free_port()
    process = start(contender, port)
    server = psutil.Process(process.pid)
    tokens = Authenticator(SECRET_KEY, 3600)
    try:
        # Warm up: imports, caches and the allocator's first arenas are not per-connection.
        for sock in [open_connection(port, transport, tokens.issue(f"w{i}")) for i in range(50)]:
            sock.close()
        time.sleep(1.0)
        before = server.memory_info().rss
        sockets = [
            open_connection(port, transport, tokens.issue(f"p{i}")) for i in range(connections)
        ]
        time.sleep(1.0)
        after = server.memory_info().rss
        for sock in sockets:
            sock.close()
        return (after - before) / connections / 1024
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transports", nargs="+", default=["ws", "sse"], choices=["ws", "sse"])
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    samples: dict[str, dict[str, list[float]]] = {
        t: {c: [] for c in CONTENDERS} for t in args.transports
    }
    for run in range(args.repeat):
        for transport in args.transports:
            for contender in CONTENDERS:  # alternate contenders within each repeat
                kib = measure(contender, transport, args.connections)
                samples[transport][contender].append(kib)
                print(
                    f"run {run + 1}: {transport:3} {contender:9} {kib:6.1f} KiB/connection",
                    flush=True,
                )

    results: dict[str, Any] = {
        "connections": args.connections,
        "repeat": args.repeat,
        "results": {
            transport: {
                contender: {
                    "median_kib": round(statistics.median(values), 1),
                    "min_kib": round(min(values), 1),
                    "max_kib": round(max(values), 1),
                }
                for contender, values in by_contender.items()
            }
            for transport, by_contender in samples.items()
        },
    }
    for transport, by_contender in results["results"].items():
        floor = by_contender["bare-asgi"]["median_kib"]
        mine = by_contender["mudgate"]["median_kib"]
        ratio = f"{mine / floor:.2f}" if floor > 0 else "n/a"  # tiny smoke runs can measure 0
        print(f"{transport}: mudgate {mine} KiB vs floor {floor} KiB (ratio {ratio})")
    write_result("idle_memory", results)


if __name__ == "__main__":
    main()
