"""What watching costs: mudgate's broadcast throughput with the health watch, the janitor and
a Prometheus scrape running at a busy pace, against all of them idle.

"On": the health watch ticks every 0.5 s (reads memory, records history, evaluates alerts),
the janitor cleans every 2 s,
and /metrics is scraped every 0.5 s. "Off": checks and cleanups an hour apart, no scraping.
Runs alternate; medians over --repeat runs.

    python bench/monitoring_overhead.py [--players 200] [--messages 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broadcast import run_once
from harness import run, summary, write_result

ON = {"MUDGATE_CHECK_INTERVAL": "0.5", "MUDGATE_CLEANUP_INTERVAL": "2"}
OFF = {"MUDGATE_CHECK_INTERVAL": "3600", "MUDGATE_CLEANUP_INTERVAL": "3600"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(args.repeat):
        # Which mode goes first alternates, so an effect of the order cancels out.
        for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
            outcome = run(
                run_once(
                    "mudgate",
                    args.players,
                    args.messages,
                    ON if mode == "on" else OFF,
                    0.5 if mode == "on" else None,
                )
            )
            rates[mode].append(outcome["deliveries_per_second"])
            cpu[mode].append(outcome["server_cpu_us_per_delivery"])
            print(
                f"run {repeat + 1}: monitoring {mode:3} "
                f"{outcome['deliveries_per_second']:10,.0f} deliveries/s  "
                f"server {outcome['server_cpu_us_per_delivery']:5.2f} µs/delivery",
                flush=True,
            )
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cost = 1 - on / off
    # The server's own CPU per delivery does not move with the rest of the machine: what
    # watching adds to it is the figure to hold to the target.
    # A smoke run can be shorter than the CPU clock's 10 ms tick: then there is no ratio.
    cpu_off = statistics.median(cpu["off"])
    cpu_cost = statistics.median(cpu["on"]) / cpu_off - 1 if cpu_off else None
    print(
        "monitoring on costs "
        + ("an unmeasurably small" if cpu_cost is None else f"{cpu_cost:.1%}")
        + f" more server CPU per delivery and {cost:.1%} of broadcast throughput (target <= 1 %)"
    )
    write_result(
        "monitoring_overhead",
        {
            "players": args.players,
            "messages": args.messages,
            "repeat": args.repeat,
            "deliveries_per_second": {mode: summary(v, 1) for mode, v in rates.items()},
            "server_cpu_us_per_delivery": {mode: summary(v, 3) for mode, v in cpu.items()},
            "cost_fraction": round(cost, 4),
            "cpu_cost_fraction": None if cpu_cost is None else round(cpu_cost, 4),
        },
    )


if __name__ == "__main__":
    main()
