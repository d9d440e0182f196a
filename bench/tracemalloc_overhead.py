"""What tracemalloc costs while an admin has it on: hub broadcast throughput off vs on.

One process, one hub, 200 players in a room, 1,000 broadcasts each delivered to all of them
(200,000 deliveries through the real outboxes and writer tasks). Off and on alternate within
one invocation; medians over --repeat runs. Also reports tracemalloc's own memory.

    python bench/tracemalloc_overhead.py [--repeat 5] [--broadcasts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import summary, write_result  # noqa: E402

from mudgate.connection import Connection  # noqa: E402
from mudgate.hub import LOBBY, Hub  # noqa: E402
from mudgate.protocol import CloseCode, Outgoing  # noqa: E402
from mudgate.settings import Settings  # noqa: E402

PLAYERS = 200


class NullTransport:
    """A client that reads instantly: measures the gateway, not a socket."""

    name = "websocket"

    def write_now(self, message: Outgoing) -> bool:
        return False

    async def write(self, message: Outgoing) -> None:
        pass

    async def write_close(self, code: CloseCode, reason: str) -> None:
        pass

    def release(self) -> None:
        pass


async def deliveries_per_second(broadcasts: int) -> float:
    hub = Hub(Settings(max_rate_limit_entries=10**6))
    await hub.start()
    for i in range(PLAYERS):
        hub.connect(
            Connection(
                f"p{i}", "127.0.0.1", hub.limits, transport=NullTransport(), handler=None
            )
        )
    await asyncio.sleep(0)
    started = time.perf_counter()
    for i in range(broadcasts):
        hub.room_event(LOBBY, "say", text=f"message {i}")
        await asyncio.sleep(0)  # let the writers drain, as the receive loop does
    while any(conn.outbox_messages for conn in hub.connections()):
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    return PLAYERS * broadcasts / elapsed


def run(traced: bool, broadcasts: int) -> tuple[float, int]:
    if traced:
        tracemalloc.start(1)
    try:
        rate = asyncio.run(deliveries_per_second(broadcasts))
        overhead = tracemalloc.get_tracemalloc_memory() if traced else 0
    finally:
        if traced:
            tracemalloc.stop()
    return rate, overhead


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--broadcasts", type=int, default=1000, help="each to all 200 players")
    args = parser.parse_args()
    off, on, memory = [], [], []
    for _ in range(args.repeat):
        off.append(run(traced=False, broadcasts=args.broadcasts)[0])
        rate, overhead = run(traced=True, broadcasts=args.broadcasts)
        on.append(rate)
        memory.append(overhead)
    ratio = statistics.median(off) / statistics.median(on)
    print(f"tracemalloc off: {statistics.median(off):,.0f} deliveries/s (median)")
    print(f"tracemalloc on:  {statistics.median(on):,.0f} deliveries/s (median)")
    print(
        f"slowdown {ratio:.2f}x; tracemalloc's own memory {statistics.median(memory) / 2**20:.1f} MiB"
    )
    write_result(
        "tracemalloc_overhead",
        {
            "deliveries_per_second": {"off": summary(off, 1), "on": summary(on, 1)},
            "slowdown": round(ratio, 2),
            "tracemalloc_memory_bytes_median": statistics.median(memory),
        },
    )


if __name__ == "__main__":
    main()
