"""A stalled client: one player in a room of 200 stops reading while another floods the room.

For each server: the healthy players' delivery rate with the stalled one present, against the
same room with nobody stalled (the two runs back to back, so what else the machine does
changes both alike; the kept fraction is the median of the runs' ratios), the server's CPU
per delivery in both, and its RSS growth over the flood. Each run is a fresh server;
contenders alternate.

    python bench/stalled.py [--players 200] [--seconds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broadcast import CONTENDERS, WINDOW  # noqa: E402
from clients import Dialect, RawClient  # noqa: E402
from harness import cpu_seconds, free_port, run, start, stop, write_result  # noqa: E402

TEXT = "x" * 3000  # ~3 KB messages: the stalled client's buffers fill early in the run


async def flood(contender: str, players: int, seconds: float, stall: bool) -> dict[str, float]:
    port = free_port()
    process = start(contender, port)
    server = psutil.Process(process.pid)
    dialect = Dialect(contender)
    try:
        clients = [await RawClient.open(port, dialect, f"p{i}") for i in range(players)]
        stalled = clients[-1]
        if stall:  # it reads nothing, into the smallest buffer the kernel allows
            stalled.writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
            )
        healthy = clients[:-1] if stall else clients
        readers = [asyncio.create_task(client.read_forever()) for client in healthy]
        await asyncio.sleep(0.5)
        sender, probe = clients[0], clients[1]
        rss_before = server.memory_info().rss
        cpu_before = cpu_seconds([process.pid])
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            for _ in range(WINDOW):
                sender.send_text(dialect.say(f"m{sent}:0:{TEXT}"))
                sent += 1
            # Paced by what a healthy player has received, and bounded by the clock (a server
            # stuck on the stalled client stops reading the sender too).
            try:
                async with asyncio.timeout(max(0.0, seconds - (time.perf_counter() - started))):
                    await sender.writer.drain()
                    while probe.count < sent:
                        await asyncio.sleep(0.001)
            except TimeoutError:
                break
        elapsed = time.perf_counter() - started
        delivered = min(client.count for client in healthy[1:])
        cpu = cpu_seconds([process.pid]) - cpu_before
        rss_after = server.memory_info().rss
        for task in readers:
            task.cancel()
        # Reset every connection now, and let the server see it before it is told to stop:
        # a server still stuck on the stalled client would wait out its shutdown timeout.
        for client in clients:
            client.writer.transport.abort()
        await asyncio.sleep(0.2)
        return {
            "healthy_deliveries_per_second": delivered / elapsed,
            "server_cpu_us_per_delivery": cpu / max(1, delivered * len(healthy)) * 1e6,
            "rss_growth_mib": (rss_after - rss_before) / 2**20,
        }
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        c: {"stalled": [], "unstalled": []} for c in CONTENDERS
    }
    for repeat in range(args.repeat):
        for contender in CONTENDERS:
            # Which case goes first alternates, so an effect of the order cancels out.
            for case in ("unstalled", "stalled") if repeat % 2 == 0 else ("stalled", "unstalled"):
                outcome = run(
                    flood(contender, args.players, args.seconds, stall=case == "stalled")
                )
                runs[contender][case].append(outcome)
                print(
                    f"run {repeat + 1}: {contender:13} {case:9} "
                    f"{outcome['healthy_deliveries_per_second']:8,.0f} msg/s per healthy player, "
                    f"server {outcome['server_cpu_us_per_delivery']:5.1f} µs/delivery, "
                    f"RSS {outcome['rss_growth_mib']:+.1f} MiB",
                    flush=True,
                )
    results = {}
    for contender, cases in runs.items():
        median = {
            case: {
                key: round(statistics.median(run[key] for run in outcomes), 2)
                for key in outcomes[0]
            }
            for case, outcomes in cases.items()
        }
        kept = statistics.median(
            stalled["healthy_deliveries_per_second"] / unstalled["healthy_deliveries_per_second"]
            for unstalled, stalled in zip(cases["unstalled"], cases["stalled"], strict=True)
            if unstalled["healthy_deliveries_per_second"] > 0
        )
        results[contender] = median | {"kept_fraction": round(kept, 3)}
        print(f"{contender}: healthy players keep {kept:.1%} of their unstalled rate")
    write_result(
        "stalled",
        {
            "players": args.players,
            "seconds": args.seconds,
            "repeat": args.repeat,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
