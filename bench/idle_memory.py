"""Server RSS per idle connection: mudgate vs each peer and the bare-ASGI floor, same uvicorn.

Each run starts a fresh server process, warms it up, opens N connections that each wait for
their first event and then stay idle, and reads the server's RSS before and after. Contenders
alternate within one invocation; the result is the median (with min and max) over repeats.

    python bench/idle_memory.py [--connections 2000 5000] [--repeat 3] [--transports ws sse]
"""

from __future__ import annotations

import argparse
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
from clients import TOKENS, Dialect, handshake, ws_frame
from harness import BASELINE, free_port, start, stop, write_result

# bare-asgi is the floor: uvicorn holding a socket and nothing else. The FastAPI docs pattern
# and python-socketio have no SSE endpoint, so SSE compares mudgate with the floor only.
CONTENDERS = {
    "ws": ("mudgate", "bare-asgi", "fastapi-docs", "socketio"),
    "sse": ("mudgate", "bare-asgi"),
}


def open_connection(port: int, transport: str, dialect: Dialect, player: str) -> socket.socket:
    """A client that reads the handshake and the first event, then sits idle."""
    sock = socket.create_connection(("127.0.0.1", port))
    if transport == "ws":
        sock.sendall(handshake(dialect.path(player)))
        if dialect.hello is not None:  # once the upgrade is answered
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            sock.sendall(ws_frame(dialect.hello))
    else:
        sock.sendall(
            f"GET /events?token={TOKENS.issue(player)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
    received = b""
    while dialect.welcome not in received:
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
    dialect = Dialect(contender)
    try:
        # Warm up: imports, caches and the allocator's first arenas are not per-connection.
        for sock in [open_connection(port, transport, dialect, f"w{i}") for i in range(50)]:
            sock.close()
        time.sleep(1.0)
        before = server.memory_info().rss
        sockets = [open_connection(port, transport, dialect, f"p{i}") for i in range(connections)]
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
    parser.add_argument("--connections", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transports", nargs="+", default=["ws", "sse"], choices=["ws", "sse"])
    parser.add_argument(
        "--baseline", type=Path, metavar="SRC",
        help="also measure mudgate from another checkout's src/: before vs after, side by side",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", nargs="+", metavar="NAME",
        help="only these (mudgate, bare-asgi, fastapi-docs, socketio; the baseline is added)",
    )  # fmt: skip
    args = parser.parse_args()
    contenders = {
        transport: [c for c in peers if args.contenders is None or c in args.contenders]
        for transport, peers in CONTENDERS.items()
    }
    if args.baseline is not None:
        os.environ["MUDGATE_BENCH_BASELINE"] = str(args.baseline.resolve())
        for peers in contenders.values():
            peers.insert(1, BASELINE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        str(n): {t: {c: [] for c in contenders[t]} for t in args.transports}
        for n in args.connections
    }
    for run in range(args.repeat):
        for n in args.connections:
            for transport in args.transports:
                peers = contenders[transport]
                # Alternate within each repeat, in the reverse order every other repeat.
                for contender in peers if run % 2 == 0 else peers[::-1]:
                    kib = measure(contender, transport, n)
                    samples[str(n)][transport][contender].append(kib)
                    print(
                        f"run {run + 1}: {n:5} {transport:3} {contender:12} "
                        f"{kib:6.1f} KiB/connection",
                        flush=True,
                    )

    results: dict[str, Any] = {
        "connections": args.connections,
        "repeat": args.repeat,
        "results": {
            n: {
                transport: {
                    contender: {
                        "median_kib": round(statistics.median(values), 1),
                        "min_kib": round(min(values), 1),
                        "max_kib": round(max(values), 1),
                    }
                    for contender, values in by_contender.items()
                }
                for transport, by_contender in by_transport.items()
            }
            for n, by_transport in samples.items()
        },
    }
    for n, by_transport in results["results"].items():
        for transport, by_contender in by_transport.items():
            mine = by_contender["mudgate"]["median_kib"]
            others = ", ".join(
                f"{peer} {r['median_kib']} KiB"
                for peer, r in by_contender.items()
                if peer != "mudgate"
            )
            print(f"{n} {transport}: mudgate {mine} KiB; {others}")
    # A before/after comparison is a result of its own, beside the one BENCHMARKS.md shows.
    write_result("idle_memory" if args.baseline is None else "idle_memory_baseline", results)


if __name__ == "__main__":
    main()
