"""Server RSS per idle telnet connection, with and without MCCP2, beside idle WebSockets: one
mudgate, the same build, side by side in one run.

Each run starts a fresh server (telnet on a port of its own), warms it up with 50 connections
of the kind measured, then opens N that each sign in (a guest over telnet, a token over
WebSocket), wait for their welcome and stay idle; the server's RSS before and after, over N,
is the figure, and its CPU time over the N sign-ins, per connection, is beside it. The kinds:

- ``ws``: a WebSocket on ``/ws`` (what bench/idle_memory.py measures);
- ``telnet``: a guest that answers no option (a plain ``telnet``);
- ``telnet-mccp2``: the same, compressed with MCCP2 at mudgate's default zlib state
  (``MUDGATE_TELNET_MCCP_WINDOW_BITS=10``, ``MUDGATE_TELNET_MCCP_MEM_LEVEL=1``);
- ``telnet-mccp2-zlib``: MCCP2 at zlib's own defaults (15 and 8): what the small state saves.

The kinds alternate within each repeat, in the reverse order every other repeat; figures are
medians (with min and max) over --repeat runs, ratios over ``ws``.

    python bench/telnet_idle.py [--connections 2000] [--repeat 3] [--kinds ws telnet ...]
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import Dialect  # noqa: E402
from harness import cpu_seconds, free_port, start, stop, write_result  # noqa: E402
from idle_memory import open_connection  # noqa: E402
from telnet_client import SERVER_ENV, login, wait_for_port  # noqa: E402

ZLIB_DEFAULTS = {"MUDGATE_TELNET_MCCP_WINDOW_BITS": "15", "MUDGATE_TELNET_MCCP_MEM_LEVEL": "8"}
# Each kind: whether its telnet clients ask for MCCP2, and the server's environment.
KINDS: dict[str, tuple[bool, dict[str, str]]] = {
    "ws": (False, {}),
    "telnet": (False, {}),
    "telnet-mccp2": (True, {}),
    "telnet-mccp2-zlib": (True, ZLIB_DEFAULTS),
}
WARMUP = 50


def measure(kind: str, connections: int) -> dict[str, float]:
    """KiB of server RSS per idle connection of ``kind``, and the server's CPU µs to let
    each one in."""
    mccp, env = KINDS[kind]
    port, telnet_port = free_port(), free_port()
    process = start("mudgate", port, SERVER_ENV | {"MUDGATE_TELNET_PORT": str(telnet_port)} | env)
    server = psutil.Process(process.pid)
    dialect = Dialect("mudgate")

    def connect(name: str) -> socket.socket:
        if kind == "ws":
            return open_connection(port, "ws", dialect, name)
        return login(telnet_port, mccp=mccp)

    try:
        wait_for_port(telnet_port)
        # Warm up: imports, caches and the allocator's first arenas are not per-connection.
        for sock in [connect(f"w{i}") for i in range(WARMUP)]:
            sock.close()
        time.sleep(1.0)
        before = server.memory_info().rss
        cpu = cpu_seconds([process.pid])
        sockets = [connect(f"p{i}") for i in range(connections)]
        cpu = cpu_seconds([process.pid]) - cpu
        time.sleep(1.0)
        after = server.memory_info().rss
        for sock in sockets:
            sock.close()
        return {
            "kib_per_connection": (after - before) / connections / 1024,
            "cpu_us_per_connection": cpu / connections * 1e6,
        }
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    # Both ends of every connection are in this machine: the clients' here, the server's in
    # its process (which inherits this limit, and fits MUDGATE_MAX_SOCKETS to it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 200:
        raise SystemExit(f"ulimit -Hn is {hard}: too few for {args.connections} connections")

    began = time.monotonic()
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in args.kinds}
    for repeat in range(args.repeat):
        for kind in args.kinds if repeat % 2 == 0 else args.kinds[::-1]:
            outcome = measure(kind, args.connections)
            runs[kind].append(outcome)
            print(
                f"run {repeat + 1}: {args.connections:5} {kind:18} "
                f"{outcome['kib_per_connection']:6.1f} KiB/connection, "
                f"{outcome['cpu_us_per_connection']:7.0f} µs CPU to let one in",
                flush=True,
            )
    results: dict[str, Any] = {
        kind: {
            f"{stat}_{figure}": round(function(o[figure] for o in outcomes), 1)
            for figure in ("kib_per_connection", "cpu_us_per_connection")
            for stat, function in (("median", statistics.median), ("min", min), ("max", max))
        }
        for kind, outcomes in runs.items()
    }
    ratios = {
        kind: {
            # None where the WebSocket figure is 0: a smoke run of a few connections can
            # move RSS by less than a page.
            figure: round(r[f"median_{figure}"] / base, 2) if base else None
            for figure in ("kib_per_connection", "cpu_us_per_connection")
            for base in (results["ws"][f"median_{figure}"],)
        }
        for kind, r in results.items()
        if "ws" in results and kind != "ws"
    }
    for kind, r in results.items():
        print(
            f"{kind:18} {r['median_kib_per_connection']:6.1f} KiB "
            f"({r['min_kib_per_connection']}–{r['max_kib_per_connection']}), "
            f"{r['median_cpu_us_per_connection']:6.0f} µs/connection"
            + (f"; / ws: {ratios[kind]}" if kind in ratios else "")
        )
    seconds = time.monotonic() - began
    print(f"took {seconds:.0f} s")
    write_result(
        "telnet_idle",
        {
            "connections": args.connections,
            "repeat": args.repeat,
            "seconds": round(seconds),
            "results": results,
            "ratios_to_ws": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
