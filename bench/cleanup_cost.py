"""What monitoring costs: one MemoryMonitor read, and one cleanup over pending messages.

Cleanup runs over 100,000 pending-message entries with 1 % of them expired, in two layouts
(1,000 players x 100 messages, 100,000 players x 1 message), and over 10x fewer and 10x more
entries with the same 1,000 expired, so the ratio shows how the sweep scales. Times are the
medians of --repeat runs, with min and max.

    python bench/cleanup_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import summary, write_result  # noqa: E402

from mudgate.cleanup import Janitor, Trigger  # noqa: E402
from mudgate.hub import Hub  # noqa: E402
from mudgate.memory.monitor import MemoryMonitor  # noqa: E402
from mudgate.protocol import Outgoing  # noqa: E402
from mudgate.settings import Settings  # noqa: E402

EXPIRED = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor_read_microseconds(reads: int = 2000) -> float:
    monitor = MemoryMonitor(Settings())
    monitor.read()
    started = time.perf_counter()
    for _ in range(reads):
        monitor.read()
    return (time.perf_counter() - started) / reads * 1e6


async def cleanup_seconds(players: int, per_player: int) -> tuple[float, int]:
    """One scheduled cleanup over players x per_player queued messages, EXPIRED of them old.

    Scheduled (Trigger.TIME), not forced: a forced or pressure cleanup also runs gc.collect()
    and malloc_trim(0), whose cost is the whole heap's by design, not the sweep's.
    """
    clock = Clock()
    settings = Settings(
        max_players=players + 10,
        max_pending_messages=per_player,
        max_pending_bytes=2**40,
        last_seen_ttl=10**6,
    )
    hub = Hub(settings, clock=clock)
    janitor = Janitor(hub, MemoryMonitor(settings), settings, clock=clock)
    message = Outgoing("tell", b'{"type":"event","event":"tell","text":"hello"}')
    old_players = EXPIRED // per_player
    for i in range(players):
        player_id = f"p{i}"
        hub.absentees.last_seen.set(player_id, 0.0)
        if i == old_players:
            clock.now += 3000  # the rest are queued later: they outlive the cleanup
        for _ in range(per_player):
            hub.send(player_id, message)
    clock.now += 3600 - 3000 + 1  # the first EXPIRED messages are now past their TTL
    started = time.perf_counter()
    report = await janitor.clean(Trigger.TIME)
    return time.perf_counter() - started, report.removed["pending_messages"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny structures: check it runs")
    args = parser.parse_args()

    reads = [monitor_read_microseconds() for _ in range(args.repeat)]
    print(f"monitor read: median {statistics.median(reads):.1f} us")
    layouts = {
        "1000 players x 100 (100k entries)": (1000, 100),
        "100000 players x 1 (100k entries)": (100_000, 1),
        "100 players x 100 (10k entries)": (100, 100),
        "10000 players x 100 (1M entries)": (10_000, 100),
    }
    if args.smoke:
        layouts = {
            name: (players // 10 if per == 100 else players // 100, per)
            for name, (players, per) in layouts.items()
        }
        layouts = {name: (max(players, 10), per) for name, (players, per) in layouts.items()}
    cleanups: dict[str, dict[str, float]] = {}
    for name, (players, per_player) in layouts.items():
        times = []
        for _ in range(args.repeat):
            seconds, removed = asyncio.run(cleanup_seconds(players, per_player))
            assert args.smoke or removed == EXPIRED, removed
            times.append(seconds)
        cleanups[name] = summary(times)
        print(
            f"cleanup, {name}, {EXPIRED} expired: median {cleanups[name]['median'] * 1000:.2f} ms"
        )
    small = cleanups["100 players x 100 (10k entries)"]["median"]
    large = cleanups["10000 players x 100 (1M entries)"]["median"]
    print(f"1M vs 10k entries, same {EXPIRED} expired: time ratio {large / small:.1f}")
    write_result(
        "cleanup_cost",
        {
            "monitor_read_microseconds": summary(reads),
            "cleanup_seconds": cleanups,
            "ratio_1m_vs_10k": round(large / small, 2),
        },
    )


if __name__ == "__main__":
    main()
