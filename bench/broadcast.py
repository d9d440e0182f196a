"""Broadcast throughput: one player talks in a room of N, mudgate vs each peer.

Each run starts a fresh server process; N raw WebSocket clients (handshake, then counting
frames) and one sender live in this process, which is the load generator: its CPU use is
reported beside each result. The sender sends in windows of 50 messages and waits until a
receiver has all of them, so the servers are measured at full speed without an unbounded
backlog. Latency is from the send to the receipt at one receiver. Contenders alternate, in
the reverse order every other repeat; the result is the median over --repeat runs.

    python bench/broadcast.py [--players 100 1000] [--messages 1000] [--repeat 3]

With ``--rate D``, the sender offers D deliveries a second (D / players messages a second,
evenly spaced) instead of sending as fast as the receivers read: every server then does the
same work per turn of its event loop, so its CPU per delivery compares like with like (at
full speed the figure moves with how much each turn happens to batch).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import os
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import Dialect, RawClient  # noqa: E402
from harness import (  # noqa: E402
    BASELINE,
    cpu_seconds,
    free_port,
    node_peers_installed,
    run,
    start,
    stop,
    write_result,
)

CONTENDERS = ("mudgate", "fastapi-docs", "socketio", "node-ws", "node-socketio")
WINDOW = 50


async def scrape_metrics(port: int, every_seconds: float) -> None:
    """A Prometheus that scrapes /metrics every ``every_seconds`` (for the overhead benchmark)."""
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        await asyncio.sleep(every_seconds)


async def run_once(
    contender: str,
    players: int,
    messages: int,
    extra_env: dict[str, str] | None = None,
    scrape_every_seconds: float | None = None,
    rate: float | None = None,
) -> dict[str, float]:
    port = free_port()
    process = start(contender, port, extra_env)
    dialect = Dialect(contender)
    try:
        clients = [await RawClient.open(port, dialect, f"p{i}") for i in range(players)]
        scraper = (
            None
            if scrape_every_seconds is None
            else asyncio.create_task(scrape_metrics(port, scrape_every_seconds))
        )
        try:
            return await measure(
                clients, dialect, messages, settle_seconds=0.5, servers=[process.pid], rate=rate
            )
        finally:
            if scraper is not None:
                scraper.cancel()
    finally:
        stop(process)


async def measure(
    clients: list[RawClient],
    dialect: Dialect,
    messages: int,
    settle_seconds: float,
    servers: list[int],
    rate: float | None = None,
) -> dict[str, float]:
    """clients[0] talks, everyone counts; clients[1] is the probe that times each message.

    ``servers`` are the server processes (pids): their CPU time over the run, per delivery,
    is the figure that other work on the machine does not move. ``rate``: deliveries a
    second to offer, evenly spaced (None: windows of WINDOW messages, as fast as they go).
    """
    me = psutil.Process()
    sender, probe = clients[0], clients[1]
    probe.latencies = []
    readers = [asyncio.create_task(client.read_forever()) for client in clients]
    await asyncio.sleep(settle_seconds)
    me.cpu_percent()
    server_cpu = cpu_seconds(servers)
    started = time.perf_counter()
    if rate is not None:
        await send_paced(sender, dialect, messages, len(clients) / rate)
    for window in range(0, messages if rate is None else 0, WINDOW):
        for i in range(window, min(messages, window + WINDOW)):
            sender.send_text(dialect.say(f"m{i}:{time.perf_counter()}"))
        await sender.writer.drain()
        async with asyncio.timeout(60):
            while probe.count < min(messages, window + WINDOW):
                await asyncio.sleep(0.0005)
    async with asyncio.timeout(60):
        while min(client.count for client in clients) < messages:
            await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    cpu = me.cpu_percent()
    server_cpu = cpu_seconds(servers) - server_cpu
    for task in readers:
        task.cancel()
    # Reset the connections and let the server see it before it is told to stop: a server
    # still holding them waits out its shutdown timeout for their close replies.
    for client in clients:
        client.writer.transport.abort()
    await asyncio.sleep(0.2)
    latencies = sorted(probe.latencies)
    deliveries = len(clients) * messages
    return {
        "deliveries_per_second": deliveries / elapsed,
        "server_cpu_us_per_delivery": server_cpu / deliveries * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "client_cpu_percent": cpu,
    }


async def send_paced(
    sender: RawClient, dialect: Dialect, messages: int, interval_seconds: float
) -> None:
    """One message every ``interval_seconds``, on a schedule that does not drift."""
    due = time.perf_counter()
    for i in range(messages):
        sender.send_text(dialect.say(f"m{i}:{time.perf_counter()}"))
        due += interval_seconds
        await sender.writer.drain()
        await asyncio.sleep(max(0.0, due - time.perf_counter()))


def summarize(outcomes: list[dict[str, float]]) -> dict[str, float]:
    """Medians of every figure over the runs, with the throughput's min and max."""
    rates = [outcome["deliveries_per_second"] for outcome in outcomes]
    return {
        key: round(statistics.median(outcome[key] for outcome in outcomes), 2)
        for key in outcomes[0]
    } | {
        "min_deliveries_per_second": round(min(rates)),
        "max_deliveries_per_second": round(max(rates)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, metavar="DELIVERIES",
        help="offer this many deliveries a second instead of as many as the receivers read",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
        help="the servers to compare (the Node.js ones need `make bench`'s npm install)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", type=Path, metavar="SRC",
        help="also run mudgate from another checkout's src/ (git worktree add /tmp/base REF; "
        "--baseline /tmp/base/src): before vs after, side by side",
    )  # fmt: skip
    args = parser.parse_args()
    contenders = list(args.contenders)
    if args.baseline is not None:
        os.environ["MUDGATE_BENCH_BASELINE"] = str(args.baseline.resolve())
        contenders.insert(1, BASELINE)
    if not node_peers_installed():
        missing = [c for c in contenders if c.startswith("node-")]
        if missing:
            print(f"skipping {', '.join(missing)}: run `make bench` (node and npm install)")
            contenders = [c for c in contenders if c not in missing]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for players in args.players:
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
        for repeat in range(args.repeat):
            # Every other repeat in the reverse order, so that going first (or second) is
            # nobody's advantage: a before/after pair is otherwise within ±6 % of itself.
            for contender in contenders if repeat % 2 == 0 else contenders[::-1]:
                outcome = run(run_once(contender, players, args.messages, rate=args.rate))
                runs[contender].append(outcome)
                print(
                    f"run {repeat + 1}: {players:5} players {contender:13} "
                    f"{outcome['deliveries_per_second']:10,.0f} deliveries/s  "
                    f"server {outcome['server_cpu_us_per_delivery']:5.1f} µs/delivery  "
                    f"p50 {outcome['p50_ms']:6.1f} ms  p99 {outcome['p99_ms']:6.1f} ms  "
                    f"client CPU {outcome['client_cpu_percent']:.0f}%",
                    flush=True,
                )
        results[str(players)] = {
            contender: summarize(outcomes) for contender, outcomes in runs.items()
        }
        by = results[str(players)]
        for peer in contenders:
            if peer == "mudgate":
                continue
            rate = by["mudgate"]["deliveries_per_second"] / by[peer]["deliveries_per_second"]
            cost = (
                by["mudgate"]["server_cpu_us_per_delivery"]
                / by[peer]["server_cpu_us_per_delivery"]
            )
            print(
                f"{players} players: mudgate / {peer}: deliveries/s {rate:.2f}, "
                f"server CPU per delivery {cost:.2f}"
            )
    # A before/after comparison is a result of its own, beside the one BENCHMARKS.md shows.
    name = "broadcast" if args.baseline is None else "broadcast_baseline"
    write_result(
        name if args.rate is None else f"{name}_paced",
        {"messages": args.messages, "repeat": args.repeat, "rate": args.rate, "results": results},
    )


if __name__ == "__main__":
    main()
