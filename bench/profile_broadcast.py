"""Where a broadcast's server time goes: mudgate under py-spy while one player talks in a
room of N, then the functions with the most samples on the CPU (own time, and with callees).

    python bench/profile_broadcast.py [--players 1000] [--messages 500] [--top 25]

py-spy samples the server process from outside (it needs ptrace: root, or
kernel.yama.ptrace_scope=0); the raw stacks are kept in bench/results/profile_broadcast.txt.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broadcast import measure  # noqa: E402
from clients import Dialect, RawClient  # noqa: E402
from harness import RESULTS, free_port, run, start, stop  # noqa: E402


async def load(port: int, pid: int, players: int, messages: int) -> None:
    dialect = Dialect("mudgate")
    clients = [await RawClient.open(port, dialect, f"p{i}") for i in range(players)]
    outcome = await measure(clients, dialect, messages, settle_seconds=0.5, servers=[pid])
    print(
        f"{outcome['deliveries_per_second']:,.0f} deliveries/s, "
        f"{outcome['server_cpu_us_per_delivery']:.1f} µs of server CPU per delivery "
        "(py-spy's sampling included)"
    )


def top(stacks: Path, count: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        n = int(samples)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples on the CPU\n\nown time:")
    for frame, n in own.most_common(count):
        print(f"{n / total:6.1%}  {frame}")
    print("\nwith callees:")
    for frame, n in inclusive.most_common(count):
        print(f"{n / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if py_spy is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    port = free_port()
    server = start("mudgate", port)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stacks = RESULTS / "profile_broadcast.txt"
    sampler = subprocess.Popen(
        [py_spy, "record", "--pid", str(server.pid), "--format", "raw", "--output", str(stacks),
         "--rate", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        run(load(port, server.pid, args.players, args.messages))
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=30)
        stop(server)
    top(stacks, args.top)


if __name__ == "__main__":
    main()
