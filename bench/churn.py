"""Churn: connect → join → say → disconnect, again and again, half of the cycles ended by a
TCP reset instead of a close handshake. Does the server give back what each cycle took?

Several client processes share the cycles (each runs --concurrency cycles at a time); this
process watches the server: its RSS after the warm-up (the first 10 % of the cycles) and at the
end (after a short settle and, for mudgate, a forced cleanup so the one-hour memories of who
left, with their TTL shortened here to 2 s, are swept), and every structure's size at the end.
Each cycle's say is awaited (its echo comes back) so the server really did the work. Contenders
alternate; medians over --repeat runs.

    python bench/churn.py [--cycles 50000] [--processes 3] [--concurrency 25] [--repeat 1]
                          [--contenders mudgate fastapi-docs socketio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import struct
import sys
import time
import urllib.request
from collections import Counter
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import CLOSE_FRAME, MARKER, Dialect, RawClient  # noqa: E402
from harness import free_port, start, stop, summary, write_result  # noqa: E402

CONTENDERS = ("mudgate", "fastapi-docs", "socketio")
ROOMS = 20
SETTLE_SECONDS = 3.0
WARMUP_FRACTION = 0.1
# The memories of who left (last_seen, connection attempts) expire after this here, so that
# "everything back to zero" can be checked within a run; in production they keep an hour.
MUDGATE_ENV = {"MUDGATE_LAST_SEEN_TTL": "2", "MUDGATE_CONNECTION_ATTEMPT_TTL": "2"}


async def cycle(port: int, dialect: Dialect, index: int) -> None:
    client = await RawClient.open(port, dialect, f"p{index}")
    join = dialect.join(f"r{index % ROOMS}")
    if join is not None:
        client.send_text(join)
    client.send_text(dialect.say(f"m{index}:0"))
    # Our own say comes back to us: the server has done the cycle's work.
    received = b""
    while MARKER + str(index).encode() + b":" not in received:
        chunk = await client.reader.read(65536)
        if not chunk:
            raise ConnectionError("closed before the say came back")
        received = received[-64:] + chunk
    if index % 2:
        # A crashed client: RST, no close handshake.
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()
    else:
        client.writer.write(CLOSE_FRAME)
        await client.writer.drain()
        async with asyncio.timeout(5):
            while await client.reader.read(65536):
                pass
        client.writer.close()


async def worker_loop(
    port: int, dialect: Dialect, claimed: Synchronized[int], total: int, done: Synchronized[int],
    errors: Counter[str],
) -> None:  # fmt: skip
    while True:
        with claimed.get_lock():
            index = claimed.value
            claimed.value += 1
        if index >= total:
            return
        try:
            async with asyncio.timeout(10):
                await cycle(port, dialect, index)
        except Exception as error:  # counted and reported, never fatal
            errors[type(error).__name__] += 1
        with done.get_lock():
            done.value += 1


def worker(
    port: int, contender: str, claimed: Any, total: int, done: Any, concurrency: int,
    results: Any,
) -> None:  # fmt: skip
    errors: Counter[str] = Counter()

    async def main() -> None:
        dialect = Dialect(contender)
        await asyncio.gather(
            *(worker_loop(port, dialect, claimed, total, done, errors) for _ in range(concurrency))
        )

    asyncio.run(main())
    results.put(dict(errors))


def get_json(port: int, path: str, token: str | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def structures(contender: str, port: int) -> dict[str, int]:
    if contender != "mudgate":
        return dict(get_json(port, "/stats"))
    get_json(port, "/monitoring/memory/cleanup", "bench-admin-token", method="POST")
    report = get_json(port, "/monitoring/memory")
    return {**report["connections"], **report["data_structures"]}


def run_once(contender: str, cycles: int, processes: int, concurrency: int) -> dict[str, Any]:
    port = free_port()
    server_process = start(contender, port, MUDGATE_ENV if contender == "mudgate" else None)
    server = psutil.Process(server_process.pid)
    context = multiprocessing.get_context("spawn")
    claimed, done = context.Value("q", 0), context.Value("q", 0)
    results = context.Queue()
    workers = [
        context.Process(
            target=worker, args=(port, contender, claimed, cycles, done, concurrency, results)
        )
        for _ in range(processes)
    ]
    try:
        started = time.perf_counter()
        for process in workers:
            process.start()
        clients = [psutil.Process(process.pid) for process in workers]
        client_cpu = [0.0] * len(clients)  # read while they live: a finished one is gone
        tty = sys.stdout.isatty()
        reported = 0
        warm_rss: int | None = None
        peak_rss = 0
        samples = []
        while any(process.is_alive() for process in workers):
            time.sleep(0.5)
            rss = server.memory_info().rss
            peak_rss = max(peak_rss, rss)
            samples.append((round(time.perf_counter() - started, 2), done.value, rss))
            if warm_rss is None and done.value >= cycles * WARMUP_FRACTION:
                warm_rss = rss
            for i, client in enumerate(clients):
                client_cpu[i] = _cpu_seconds(client) or client_cpu[i]
            progress = (
                f"  {contender:12} {done.value:7,}/{cycles:,} cycles  server RSS "
                f"{rss / 2**20:6.1f} MiB"
            )
            if tty:
                print(f"\r{progress}", end="", flush=True)
            elif done.value >= reported + cycles // 5:  # a line every 20 % in a log
                reported = done.value
                print(progress, flush=True)
        elapsed = time.perf_counter() - started
        errors: Counter[str] = Counter()
        for _ in workers:
            errors.update(results.get(timeout=10))
        for process in workers:
            process.join()
        time.sleep(SETTLE_SECONDS)
        at_end = structures(contender, port)
        end_rss = server.memory_info().rss
        if tty:
            print()
        assert warm_rss is not None
        return {
            "cycles_per_second": cycles / elapsed,
            "rss_after_warmup_mib": warm_rss / 2**20,
            "rss_at_end_mib": end_rss / 2**20,
            "rss_growth_mib": (end_rss - warm_rss) / 2**20,
            "rss_peak_mib": peak_rss / 2**20,
            "structures_at_end": at_end,
            "errors": dict(errors),
            # Of one core: the client processes' CPU time over the run's wall time.
            "client_cpu_percent": 100 * sum(client_cpu) / elapsed,
            "samples": samples[:: max(1, len(samples) // 60)],
        }
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()
        stop(server_process)


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=50000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--contenders", nargs="+", default=CONTENDERS, choices=CONTENDERS)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.contenders}
    for repeat in range(args.repeat):
        for contender in args.contenders:
            outcome = run_once(contender, args.cycles, args.processes, args.concurrency)
            runs[contender].append(outcome)
            nonzero = {k: v for k, v in outcome["structures_at_end"].items() if v}
            print(
                f"run {repeat + 1}: {contender:12} {outcome['cycles_per_second']:7,.0f} cycles/s  "
                f"RSS {outcome['rss_after_warmup_mib']:.1f} → {outcome['rss_at_end_mib']:.1f} MiB "
                f"({outcome['rss_growth_mib']:+.1f})  not empty at the end: {nonzero or 'none'}  "
                f"errors: {outcome['errors'] or 'none'}  client CPU "
                f"{outcome['client_cpu_percent']:.0f}%",
                flush=True,
            )
    results = {
        contender: {
            key: summary((run[key] for run in outcomes), 2)
            for key in (
                "cycles_per_second",
                "rss_after_warmup_mib",
                "rss_at_end_mib",
                "rss_growth_mib",
                "rss_peak_mib",
                "client_cpu_percent",
            )
        }
        | {
            "structures_at_end": outcomes[-1]["structures_at_end"],
            "errors": dict(sum((Counter(run["errors"]) for run in outcomes), Counter())),
            "samples": outcomes[-1]["samples"],
        }
        for contender, outcomes in runs.items()
    }
    write_result(
        "churn",
        {
            "cycles": args.cycles,
            "processes": args.processes,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "results": results,
        },
    )
    for contender, result in results.items():
        growth = result["rss_growth_mib"]["median"]
        print(f"{contender}: RSS growth after warm-up {growth:+.1f} MiB (median)")


if __name__ == "__main__":
    main()
