"""What one delivery of a broadcast costs in mudgate's own code, without the sockets.

A hub with N connections in one room, each writing through mudgate's real WebSocket transport
(``FrameTransport`` → ``FrameWriter``) into a sink that takes every frame, as an open socket
below its high-water mark does; the say path's fan-out (``Hub.room_event`` → ``Registry.send``
→ ``Connection.send`` → the transport) runs B broadcasts, and the process's CPU time per
delivery is reported (the best of --repeat rounds: the floor, without what else the machine
was doing). On a real server the socket's ``send`` costs about thirty times more (bench/
profile_broadcast.py); this is the part a refactoring of the hub, the connection or the
transports can change, measured without that noise.

    python bench/fanout.py [--connections 1000] [--broadcasts 2000] [--repeat 9]
    python bench/fanout.py --baseline /tmp/base/src   # before vs after, side by side

--baseline runs the same measurement on another checkout's src/ in a process of its own
(``git worktree add /tmp/base REF``). Checkouts from before the transports existed (before
mudgate.transports) are measured through their ``WebSocketConnection``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_result  # noqa: E402

# Run in the measured checkout's own interpreter: it prints one JSON line.
MEASURE = r"""
import asyncio, json, sys, time
from mudgate.hub import LOBBY, Hub
from mudgate.settings import Settings

connections, broadcasts, repeat = (int(value) for value in sys.argv[1:4])


class Sink:
    def write_frame(self, frame):
        return True

    async def writable(self):
        pass


def connection(hub, index):
    try:
        from mudgate.connection import Connection
        from mudgate.transports import FrameTransport, FrameWriter
    except ImportError:  # a checkout from before the transports
        from mudgate.server.frames import FrameWriter
        from mudgate.web.realtime import WebSocketConnection

        return WebSocketConnection(
            None, f"p{index}", "127.0.0.1", hub.limits, handler=None, frames=FrameWriter(Sink())
        )
    transport = FrameTransport(FrameWriter(Sink()), None)
    return Connection(f"p{index}", "127.0.0.1", hub.limits, transport=transport, handler=None)


async def main():
    hub = Hub(Settings(max_rate_limit_entries=10**6))
    await hub.start()
    for index in range(connections):
        hub.connect(connection(hub, index))
    rounds = []
    for _ in range(repeat):
        started = time.process_time()
        for index in range(broadcasts):
            hub.room_event(LOBBY, "say", text="hello there")
        rounds.append((time.process_time() - started) / (broadcasts * connections) * 1e6)
    await hub.close(0.01)
    print(json.dumps({"us_per_delivery": rounds}))


asyncio.run(main())
"""


def measure(source: Path | None, connections: int, broadcasts: int, repeat: int) -> list[float]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, str(connections), str(broadcasts), str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rounds: list[float] = json.loads(completed.stdout.splitlines()[-1])["us_per_delivery"]
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument(
        "--baseline", type=Path, metavar="SRC",
        help="also measure another checkout's src/: before vs after, side by side",
    )  # fmt: skip
    args = parser.parse_args()
    sources: dict[str, Path | None] = {"mudgate": None}
    if args.baseline is not None:
        sources["mudgate-baseline"] = args.baseline.resolve()
    floors: dict[str, list[float]] = {name: [] for name in sources}
    # Three processes each, alternating, so neither side has the machine to itself.
    for _ in range(3):
        for name, source in sources.items():
            rounds = measure(source, args.connections, args.broadcasts, args.repeat)
            floors[name].append(min(rounds))
            print(f"{name:17} {min(rounds):.4f} µs/delivery (best of {args.repeat})", flush=True)
    results = {name: round(min(values), 4) for name, values in floors.items()}
    if "mudgate-baseline" in results:
        ratio = results["mudgate"] / results["mudgate-baseline"]
        print(f"mudgate / mudgate-baseline: CPU per delivery {ratio:.2f}")
    write_result(
        "fanout" if args.baseline is None else "fanout_baseline",
        {
            "connections": args.connections,
            "broadcasts": args.broadcasts,
            "repeat": args.repeat,
            "us_per_delivery": results,
        },
    )


if __name__ == "__main__":
    main()
