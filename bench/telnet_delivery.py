"""What a room delivery costs over telnet, with and without MCCP2, against a WebSocket's: one
mudgate, the same room, side by side in one run.

Each run starts a fresh server (telnet on a port of its own) and opens N listeners of one kind
in the lobby, plus one WebSocket sender that says M lines there at a fixed rate (paced, so
every kind does the same work per turn of the event loop); each listener counts the lines it
gets, and one of them times each line from its send. Measured per run: the server's own CPU
(user + system, from /proc) per listener delivery (M x N of them; the sender's command and its
own echo are the same in every kind, and counted in), the deliveries a second, the latency,
and the bytes on the wire per delivery. The kinds:

- ``ws``: WebSocket listeners (mudgate's JSON frames, built once per event);
- ``telnet``: telnet guests that answer no option: ANSI text, rendered once per event
  (``Outgoing.view``) and written to each;
- ``telnet-mccp2``: the same, compressed with MCCP2 (mudgate's default small zlib state):
  compressed once per connection, since each has its own stream.

The kinds alternate within each repeat, in the reverse order every other repeat; figures are
medians over --repeat runs, ratios over ``ws``.

    python bench/telnet_delivery.py [--listeners 200] [--rate 100] [--messages 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import Dialect, RawClient  # noqa: E402
from harness import cpu_seconds, free_port, run, start, stop, write_result  # noqa: E402
from telnet_client import SERVER_ENV, TelnetClient, wait_for_port  # noqa: E402

# Each kind: whether its listeners are telnet, and whether they ask for MCCP2.
KINDS: dict[str, tuple[bool, bool]] = {
    "ws": (False, False),
    "telnet": (True, False),
    "telnet-mccp2": (True, True),
}
SETTLE_SECONDS = 0.5
DRAIN_SECONDS = 60.0
# Listeners connecting at once (the rest wait their turn).
CONNECTING = 50
COMPARED = ("server_cpu_us_per_delivery", "deliveries_per_second", "p50_ms", "p99_ms")


async def run_once(kind: str, listeners: int, messages: int, rate: float) -> dict[str, float]:
    telnet, mccp = KINDS[kind]
    port, telnet_port = free_port(), free_port()
    process = start("mudgate", port, SERVER_ENV | {"MUDGATE_TELNET_PORT": str(telnet_port)})
    dialect = Dialect("mudgate")
    clients: list[Any] = []
    try:
        wait_for_port(telnet_port)
        gate = asyncio.Semaphore(CONNECTING)

        async def listener(i: int) -> Any:
            async with gate:
                if telnet:
                    return await TelnetClient.open(telnet_port, mccp=mccp)
                return await RawClient.open(port, dialect, f"l{i}")

        clients = list(await asyncio.gather(*(listener(i) for i in range(listeners))))
        sender = await RawClient.open(port, dialect, "sender")
        clients.append(sender)
        return await measure(process.pid, sender, clients[:-1], dialect, messages, rate)
    finally:
        for client in clients:
            client.writer.transport.abort()
        await asyncio.sleep(0.2)
        stop(process)


async def measure(
    server_pid: int,
    sender: RawClient,
    listeners: list[Any],
    dialect: Dialect,
    messages: int,
    rate: float,
) -> dict[str, float]:
    me = psutil.Process()
    probe = listeners[0]
    probe.latencies = []
    readers = [asyncio.create_task(c.read_forever()) for c in [*listeners, sender]]
    await asyncio.sleep(SETTLE_SECONDS)
    me.cpu_percent()
    server_cpu = cpu_seconds([server_pid])
    started = time.perf_counter()
    interval = 1 / rate
    due = started
    for i in range(messages):
        sender.send_text(dialect.say(f"m{i}:{time.perf_counter()}"))
        due += interval
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    sent_seconds = time.perf_counter() - started
    deliveries = messages * len(listeners)
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline and sum(c.count for c in listeners) < deliveries:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds([server_pid]) - server_cpu
    client_cpu = me.cpu_percent()
    for task in readers:
        task.cancel()
    received = sum(c.count for c in listeners)
    latencies = sorted(probe.latencies)
    telnet = [c for c in listeners if isinstance(c, TelnetClient)]
    wire = sum(c.wire_bytes for c in telnet)
    return {
        "server_cpu_us_per_delivery": server_cpu / deliveries * 1e6,
        "server_cpu_percent": server_cpu / elapsed * 100,
        "deliveries_per_second": received / elapsed,
        "offered_per_second": deliveries / sent_seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
        # Telnet only: what a delivery weighs on the wire, and before decompression.
        "wire_bytes_per_delivery": wire / received if telnet and received else 0.0,
        "text_bytes_per_delivery": (
            sum(c.text_bytes for c in telnet) / received if telnet and received else 0.0
        ),
        "client_cpu_percent": client_cpu,
        "missing": deliveries - received,
    }


def summarize(outcomes: list[dict[str, float]]) -> dict[str, float]:
    """Medians of every figure, with the CPU per delivery's min and max; missing is a total."""
    cost = [o["server_cpu_us_per_delivery"] for o in outcomes]
    return {
        key: sum(o[key] for o in outcomes)
        if key == "missing"
        else round(statistics.median(o[key] for o in outcomes), 2)
        for key in outcomes[0]
    } | {
        "min_server_cpu_us_per_delivery": round(min(cost), 2),
        "max_server_cpu_us_per_delivery": round(max(cost), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100, help="lines said a second")
    parser.add_argument("--messages", type=int, default=1000, help="lines said a run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    began = time.monotonic()
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in args.kinds}
    for repeat in range(args.repeat):
        for kind in args.kinds if repeat % 2 == 0 else args.kinds[::-1]:
            outcome = run(run_once(kind, args.listeners, args.messages, args.rate))
            runs[kind].append(outcome)
            print(
                f"run {repeat + 1}: {kind:13} {outcome['server_cpu_us_per_delivery']:6.2f} µs "
                f"server CPU/delivery ({outcome['server_cpu_percent']:.0f} % of a core), "
                f"{outcome['deliveries_per_second']:8,.0f} deliveries/s "
                f"(offered {outcome['offered_per_second']:,.0f}), "
                f"p50 {outcome['p50_ms']:.2f} ms p99 {outcome['p99_ms']:.2f} ms, "
                f"wire {outcome['wire_bytes_per_delivery']:.1f} B/delivery, "
                f"client CPU {outcome['client_cpu_percent']:.0f} %, "
                f"missing {outcome['missing']}",
                flush=True,
            )
    results = {kind: summarize(outcomes) for kind, outcomes in runs.items()}
    ratios = {
        kind: {key: round(r[key] / results["ws"][key], 2) for key in COMPARED if results["ws"][key]}
        for kind, r in results.items()
        if "ws" in results and kind != "ws"
    }
    for kind, ratio in ratios.items():
        print(f"{kind} / ws: {ratio}")
    seconds = time.monotonic() - began
    print(f"took {seconds:.0f} s")
    write_result(
        "telnet_delivery",
        {
            "listeners": args.listeners,
            "rate": args.rate,
            "messages": args.messages,
            "repeat": args.repeat,
            "seconds": round(seconds),
            "results": results,
            "ratios_to_ws": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
