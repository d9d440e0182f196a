"""Cross-node broadcast: a room of N split over two mudgate nodes sharing a Redis, against the
same room on one node with the in-process backplane, and on `mudgate serve --workers 2`.

One player talks; every player counts what it receives. With Redis, half the room is on each
node, so half the deliveries cross Redis (published once per message, fanned out by the other
node). `workers-2` is the same on one port: two worker processes, the kernel spreading the
players between them. The load generator (this process), both nodes and redis-server share this machine's
cores: the client CPU is reported beside each result. Contenders alternate; medians over
--repeat runs.

    python bench/cluster_broadcast.py [--players 1000] [--messages 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broadcast import measure, summarize  # noqa: E402
from clients import Dialect, RawClient  # noqa: E402
from harness import free_port, run, start, stop, write_result  # noqa: E402

# in-process: one node, no Redis. redis-1-node: the same room through Redis (each message is
# also published and comes back): Redis's own cost. redis-2-nodes: the room split over two.
# workers-2: `mudgate serve --workers 2`, two nodes on one port.
CONTENDERS = ("in-process", "redis-1-node", "redis-2-nodes", "workers-2")


def wait_for_workers(supervisor: subprocess.Popen[bytes], port: int, count: int) -> None:
    """Until ``count`` workers listen on ``port`` (each listens once its start-up is done)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listening = [
            child
            for child in psutil.Process(supervisor.pid).children()
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in child.net_connections("tcp")
            )
        ]
        if len(listening) == count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} workers did not start")


def start_redis(port: int, directory: str) -> subprocess.Popen[bytes]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server (make test does)")
    process = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    return process


async def run_once(contender: str, players: int, messages: int) -> dict[str, float]:
    processes = []
    servers = []  # the mudgate nodes, whose CPU per delivery is measured (Redis's is not)
    with tempfile.TemporaryDirectory() as directory:
        try:
            if contender == "in-process":
                ports = [free_port()]
                servers.append(start("mudgate", ports[0]))
            else:
                redis_port = free_port()
                processes.append(start_redis(redis_port, directory))
                env = {"MUDGATE_BACKPLANE": f"redis://127.0.0.1:{redis_port}/0"}
                if contender == "workers-2":
                    ports = [free_port()]
                    servers.append(start("mudgate", ports[0], env | {"MUDGATE_WORKERS": "2"}))
                    wait_for_workers(servers[0], ports[0], 2)
                else:
                    ports = [free_port() for _ in range(1 if contender == "redis-1-node" else 2)]
                    servers += [start("mudgate", port, env) for port in ports]
            clients = [
                await RawClient.open(ports[i % len(ports)], Dialect("mudgate"), f"p{i}")
                for i in range(players)
            ]
            # Every node subscribed to the lobby before the first message.
            return await measure(
                clients,
                Dialect("mudgate"),
                messages,
                settle_seconds=1.0,
                servers=[server.pid for server in servers],
            )
        finally:
            for process in [*servers, *processes]:  # Redis last
                stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
    for repeat in range(args.repeat):
        for contender in CONTENDERS:
            outcome = run(run_once(contender, args.players, args.messages))
            runs[contender].append(outcome)
            print(
                f"run {repeat + 1}: {contender:14} {outcome['deliveries_per_second']:10,.0f} "
                f"deliveries/s  server {outcome['server_cpu_us_per_delivery']:5.1f} µs/delivery  "
                f"p50 {outcome['p50_ms']:6.1f} ms  p99 {outcome['p99_ms']:6.1f} ms"
                f"  client CPU {outcome['client_cpu_percent']:.0f}%",
                flush=True,
            )
    results = {contender: summarize(outcomes) for contender, outcomes in runs.items()}
    local = results["in-process"]["deliveries_per_second"]
    ratios = {
        contender: round(results[contender]["deliveries_per_second"] / local, 3)
        for contender in CONTENDERS[1:]
    }
    for contender, ratio in ratios.items():
        print(f"{contender} / in-process = {ratio:.2f}")
    write_result(
        "cluster_broadcast",
        {
            "players": args.players,
            "messages": args.messages,
            "repeat": args.repeat,
            "results": results,
            "ratios_to_in_process": ratios,
        },
    )


if __name__ == "__main__":
    main()
