"""What the game in a process of its own costs: the bench game (bench/bench_game.py) served in
the gateway's process and with ``mudgate serve --game``, side by side in one run.

N players in one room send ``act`` at a fixed total rate (paced, round-robin over the players);
the game answers the sender and tells the room (N deliveries). Measured per run: the server's
own CPU (user + system, psutil) per command and per room delivery, the gateway's alone and,
for the split, the gateway's and the game process's together; and each command's latency,
client-side, from its send to the reply with its id. The setups alternate, in the reverse
order every other repeat; figures are medians over --repeat runs, ratios split / in-process.

    python bench/game_split.py [--players 50] [--rate 1000] [--commands 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from game_load import (  # noqa: E402
    SETUPS,
    GamePlayer,
    Ledger,
    game_ready,
    own_cpu_seconds,
    percentile,
    start_game,
    stop_game,
)
from harness import free_port, run, write_result  # noqa: E402

# Seconds between the last player's welcome and the first command (the game hears of each).
SETTLE_SECONDS = 1.0
# Longest wait for the last answers and room events once every command is sent.
DRAIN_SECONDS = 30.0
# The figures whose ratio split / in-process the report gives.
COMPARED = (
    "gateway_cpu_us_per_command",
    "server_cpu_us_per_command",
    "server_cpu_us_per_delivery",
    "p50_ms",
    "p99_ms",
)


async def run_once(setup: str, players: int, commands: int, rate: float) -> dict[str, float]:
    port = free_port()
    process = start_game(setup, port)
    game_pids: list[int] = []
    clients: list[GamePlayer] = []
    readers: list[asyncio.Task[None]] = []
    try:
        state = await game_ready(port)
        if state.get("pid"):
            game_pids.append(int(state["pid"]))
        ledger = Ledger()
        clients = [await GamePlayer.open(port, f"p{i}", ledger) for i in range(players)]
        readers = [asyncio.create_task(client.read_forever()) for client in clients]
        await asyncio.sleep(SETTLE_SECONDS)
        return await measure(process.pid, game_pids, clients, ledger, commands, rate)
    finally:
        for client in clients:
            client.abort()
        for task in readers:
            task.cancel()
        await asyncio.sleep(0.2)
        stop_game(process, game_pids)


async def measure(
    gateway_pid: int,
    game_pids: list[int],
    clients: list[GamePlayer],
    ledger: Ledger,
    commands: int,
    rate: float,
) -> dict[str, float]:
    me = psutil.Process()
    me.cpu_percent()
    psutil.cpu_percent()
    gateway_cpu = own_cpu_seconds(gateway_pid)
    game_cpu = sum(map(own_cpu_seconds, game_pids))
    started = time.perf_counter()
    await send_paced(clients, commands, rate)
    sent_seconds = time.perf_counter() - started
    deliveries = commands * len(clients)
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline and (
        len(ledger.answers) < commands or sum(c.room_events for c in clients) < deliveries
    ):
        await asyncio.sleep(0.005)
    client_cpu = me.cpu_percent()
    machine_cpu = psutil.cpu_percent()  # all cores, other work on the machine included
    gateway_cpu = own_cpu_seconds(gateway_pid) - gateway_cpu
    game_cpu = sum(map(own_cpu_seconds, game_pids)) - game_cpu
    latencies = ledger.latencies_ms()
    received = sum(client.room_events for client in clients)
    return {
        "gateway_cpu_us_per_command": gateway_cpu / commands * 1e6,
        "game_cpu_us_per_command": game_cpu / commands * 1e6,
        "server_cpu_us_per_command": (gateway_cpu + game_cpu) / commands * 1e6,
        "gateway_cpu_us_per_delivery": gateway_cpu / deliveries * 1e6,
        "server_cpu_us_per_delivery": (gateway_cpu + game_cpu) / deliveries * 1e6,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "commands_per_second_sent": commands / sent_seconds,
        "client_cpu_percent": client_cpu,
        "machine_cpu_percent": machine_cpu,
        "unanswered": ledger.unanswered,
        "answered_twice": ledger.answered_twice,
        "errors": sum(ledger.errors.values()),
        "room_deliveries_missing": deliveries - received,
    }


async def send_paced(clients: list[GamePlayer], commands: int, rate: float) -> None:
    """``commands`` ``act``s, one every 1 / ``rate`` s on a schedule that does not drift,
    from each player in turn."""
    interval = 1 / rate
    due = time.perf_counter()
    for i in range(commands):
        clients[i % len(clients)].act()
        due += interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 50 == 0:
            await asyncio.sleep(0)  # behind schedule: still let the replies in


def summarize(outcomes: list[dict[str, float]]) -> dict[str, float]:
    """Medians of every figure over the runs, with the CPU per command's min and max; the
    counts of what went wrong are totals."""
    totals = ("unanswered", "answered_twice", "errors", "room_deliveries_missing")
    cost = [outcome["server_cpu_us_per_command"] for outcome in outcomes]
    return {
        key: sum(outcome[key] for outcome in outcomes)
        if key in totals
        else round(statistics.median(outcome[key] for outcome in outcomes), 2)
        for key in outcomes[0]
    } | {
        "min_server_cpu_us_per_command": round(min(cost), 2),
        "max_server_cpu_us_per_command": round(max(cost), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1000, help="commands a second, in all")
    parser.add_argument("--commands", type=int, default=5000, help="commands a run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {setup: [] for setup in SETUPS}
    began = time.monotonic()
    for repeat in range(args.repeat):
        # Every other repeat in the reverse order: going first is nobody's advantage.
        for setup in SETUPS if repeat % 2 == 0 else SETUPS[::-1]:
            outcome = run(run_once(setup, args.players, args.commands, args.rate))
            runs[setup].append(outcome)
            print(
                f"run {repeat + 1}: {setup:10} gateway {outcome['gateway_cpu_us_per_command']:6.1f}"
                f" + game {outcome['game_cpu_us_per_command']:6.1f} µs/command, "
                f"{outcome['server_cpu_us_per_delivery']:5.2f} µs/delivery, "
                f"p50 {outcome['p50_ms']:6.2f} ms p99 {outcome['p99_ms']:7.2f} ms, "
                f"sent {outcome['commands_per_second_sent']:,.0f}/s, "
                f"client CPU {outcome['client_cpu_percent']:.0f}%, "
                f"machine {outcome['machine_cpu_percent']:.0f}%, "
                f"unanswered {outcome['unanswered']}, twice {outcome['answered_twice']}, "
                f"errors {outcome['errors']}, "
                f"room deliveries missing {outcome['room_deliveries_missing']}",
                flush=True,
            )
    results = {setup: summarize(outcomes) for setup, outcomes in runs.items()}
    ratios = {
        key: round(results["split"][key] / results["in-process"][key], 2)
        for key in COMPARED
        if results["in-process"][key]
    }
    # What the split adds to a command, whatever the room's size: the link's hops.
    extra = {
        key: round(results["split"][key] - results["in-process"][key], 1)
        for key in ("gateway_cpu_us_per_command", "server_cpu_us_per_command")
    }
    print("split / in-process: " + ", ".join(f"{key} {value:.2f}" for key, value in ratios.items()))
    seconds = time.monotonic() - began
    print(f"split - in-process, µs per command: {extra}")
    print(f"took {seconds:.0f} s")
    write_result(
        "game_split",
        {
            "players": args.players,
            "rate": args.rate,
            "commands": args.commands,
            "repeat": args.repeat,
            "seconds": round(seconds),
            "results": results,
            "ratios_split_to_in_process": ratios,
            "split_extra_us_per_command": extra,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
