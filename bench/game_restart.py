"""A game restart under load: players keep playing while ``mudgate serve --game`` replaces its
game process (SIGHUP), and nobody should notice more than a notice.

P players (in rooms of --room-size) each send ``act`` with an id every --interval seconds
(paced, staggered), with the gateway's default per-player rate limits. After --warmup
seconds the gateway gets SIGHUP (``os.kill``), --restarts times, each followed by --after
seconds of play once every player has had ``game_ready``. Reported per load: players
disconnected, commands unanswered or answered twice (both must be 0), errors by code, p99
command latency for commands sent during a restart (SIGHUP to the last player's
``game_ready``) against those sent outside one, the restart's duration as the players see it
(SIGHUP to their ``game_ready``), and the gateway's RSS before and after. Whether the machine
was saturated is measured (its CPU, the load generator's, the sender's lag) and said.

    python bench/game_restart.py [--players 200 100] [--interval 0.1] [--restarts 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from game_load import (  # noqa: E402
    GamePlayer,
    Ledger,
    game_ready,
    game_state,
    percentile,
    rss_mib,
    start_game,
    stop_game,
)
from harness import free_port, run, write_result  # noqa: E402

from mudgate import Settings  # noqa: E402

# The bench harness lifts the players' rate limits; this benchmark plays by the defaults.
DEFAULTS = Settings.model_fields
RATE_LIMITS = {
    "MUDGATE_PLAYER_MESSAGES_PER_SECOND": str(DEFAULTS["player_messages_per_second"].default),
    "MUDGATE_PLAYER_MESSAGE_BURST": str(DEFAULTS["player_message_burst"].default),
}
SETTLE_SECONDS = 1.0
SAMPLE_SECONDS = 0.5
# Longest wait for every player's game_ready after a SIGHUP, and for the last answers.
READY_TIMEOUT_SECONDS = 60.0
DRAIN_SECONDS = DEFAULTS["game_queue_seconds"].default + 5
# Saturated: the machine's CPU (all cores) or the load generator's (one core) at least this.
SATURATED_PERCENT = 90.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the gateway, its live game processes and the ones it has reaped (the games
    it retired): the whole server's, across restarts."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return float(total)


class Sampler:
    """The machine's, the server's and this process's CPU, and the gateway's RSS, every
    SAMPLE_SECONDS."""

    def __init__(self, gateway_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self.samples: list[dict[str, float]] = []
        self._me = psutil.Process()

    async def run(self) -> None:
        psutil.cpu_percent()
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            times = self._me.cpu_times()
            self.samples.append(
                {
                    "at": time.perf_counter(),
                    "machine_percent": psutil.cpu_percent(),
                    "server_cpu_seconds": tree_cpu_seconds(self.gateway_pid),
                    "client_cpu_seconds": times.user + times.system,
                    "gateway_rss_mib": rss_mib(self.gateway_pid),
                }
            )

    def between(self, since: float, until: float) -> dict[str, float]:
        """Mean machine CPU, and the server's and the load generator's in cores."""
        inside = [s for s in self.samples if since <= s["at"] <= until]
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        seconds = last["at"] - first["at"]
        return {
            "machine_percent": round(statistics.mean(s["machine_percent"] for s in inside[1:]), 1),
            "server_cores": round(
                (last["server_cpu_seconds"] - first["server_cpu_seconds"]) / seconds, 2
            ),
            "client_percent": round(
                (last["client_cpu_seconds"] - first["client_cpu_seconds"]) / seconds * 100, 1
            ),
        }


class Sender:
    """Every player sends ``act`` once every ``interval_seconds``, staggered: one command every
    interval / players, round-robin, on a schedule that does not drift."""

    def __init__(self, clients: list[GamePlayer], interval_seconds: float) -> None:
        self.clients = clients
        self.interval_seconds = interval_seconds
        self.started = 0.0
        self.sent = 0
        self.worst_lag_seconds = 0.0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        step = self.interval_seconds / len(self.clients)
        self.started = due = time.perf_counter()
        turn = 0
        while not self._stopping.is_set():
            client = self.clients[turn % len(self.clients)]
            turn += 1
            if client.disconnected_at is None:
                client.act()
                self.sent += 1
            due += step
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.worst_lag_seconds = max(self.worst_lag_seconds, -delay)
                if turn % 50 == 0:
                    await asyncio.sleep(0)  # behind schedule: still let the answers in


def first_notice(client: GamePlayer, event: str, after: float) -> float | None:
    return next((at for name, at in client.notices if name == event and at >= after), None)


async def restart_once(
    port: int, gateway_pid: int, clients: list[GamePlayer], after_seconds: float
) -> dict[str, Any]:
    """SIGHUP the gateway; wait until every connected player has had game_ready; play on."""
    old_pid = (await game_state(port))["pid"]
    rss_before = rss_mib(gateway_pid)
    hup = time.perf_counter()
    os.kill(gateway_pid, signal.SIGHUP)
    deadline = hup + READY_TIMEOUT_SECONDS
    # When the new process attached (the gateway's state turns "restarting": from then until
    # it is ready, commands wait for it), and when it took over.
    attached = took_over = None
    while True:
        connected = [client for client in clients if client.disconnected_at is None]
        ready = [first_notice(client, "game_ready", hup) for client in connected]
        if took_over is None:
            state = await game_state(port)
            now = time.perf_counter()
            if state["state"] == "restarting" and attached is None:
                attached = now
            elif state["state"] == "ready" and state["pid"] != old_pid:
                took_over = now
        if all(at is not None for at in ready) or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.01)
    seen = [at - hup for at in ready if at is not None]
    restarting = [
        at - hup for client in connected if (at := first_notice(client, "game_restarting", hup))
    ]
    window_end = hup + max(seen, default=READY_TIMEOUT_SECONDS)
    state = await game_ready(port)
    await asyncio.sleep(after_seconds)
    return {
        "hup": hup,
        "window_end": window_end,
        "players_without_game_ready": len(connected) - len(seen),
        "game_restarting_ms": round(statistics.median(restarting) * 1000, 1)
        if restarting
        else None,
        "duration_ms": round(statistics.median(seen) * 1000, 1) if seen else None,
        "duration_max_ms": round(max(seen) * 1000, 1) if seen else None,
        # As /monitoring/game showed it, polled every 10 ms or so.
        "attached_ms": None if attached is None else round((attached - hup) * 1000),
        "took_over_ms": None if took_over is None else round((took_over - hup) * 1000),
        "old_pid": old_pid,
        "new_pid": state["pid"],
        "gateway_rss_before_mib": round(rss_before, 1),
        "gateway_rss_after_mib": round(rss_mib(gateway_pid), 1),
    }


async def run_load(
    players: int,
    interval_seconds: float,
    room_size: int,
    warmup_seconds: float,
    restarts: int,
    after_seconds: float,
) -> dict[str, Any]:
    port = free_port()
    process = start_game("split", port, RATE_LIMITS)
    game_pids: list[int] = []
    clients: list[GamePlayer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        game_pids.append((await game_ready(port))["pid"])
        ledger = Ledger()
        for i in range(players):
            client = await GamePlayer.open(port, f"p{i}", ledger)
            client.go(f"room{i // room_size}")
            clients.append(client)
        tasks = [asyncio.create_task(client.read_forever()) for client in clients]
        await asyncio.sleep(SETTLE_SECONDS)
        sampler = Sampler(process.pid)
        sender = Sender(clients, interval_seconds)
        tasks += [asyncio.create_task(sampler.run()), asyncio.create_task(sender.run())]
        await asyncio.sleep(warmup_seconds)
        steady = sampler.between(sender.started + 1, time.perf_counter())
        rounds = []
        for _ in range(restarts):
            rounds.append(await restart_once(port, process.pid, clients, after_seconds))
            game_pids.append(rounds[-1]["new_pid"])
        sender.stop()
        stopped = time.perf_counter()
        deadline = stopped + DRAIN_SECONDS
        while len(ledger.answers) < len(ledger.sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        state = await game_state(port)
        return report(players, ledger, clients, sender, sampler, steady, rounds, stopped, state)
    finally:
        for client in clients:
            client.abort()
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0.2)
        stop_game(process, game_pids)


def report(
    players: int,
    ledger: Ledger,
    clients: list[GamePlayer],
    sender: Sender,
    sampler: Sampler,
    steady: dict[str, float],
    rounds: list[dict[str, Any]],
    stopped: float,
    state: dict[str, Any],
) -> dict[str, Any]:
    windows = [(r["hup"], r["window_end"]) for r in rounds]
    during = [latency for since, until in windows for latency in ledger.latencies_ms(since, until)]
    outside_ids = [
        request_id
        for request_id, sent in ledger.sent.items()
        if sent >= sender.started + 1 and not any(s <= sent < u for s, u in windows)
    ]
    outside = [ledger.latencies[i] * 1000 for i in outside_ids if i in ledger.latencies]
    first_hup = windows[0][0] if windows else stopped
    before = ledger.latencies_ms(sender.started + 1, first_hup)
    saturated = []
    if steady.get("machine_percent", 0) >= SATURATED_PERCENT:
        saturated.append(f"the machine's CPU at {steady['machine_percent']:.0f} %")
    if steady.get("client_percent", 0) >= SATURATED_PERCENT:
        saturated.append(f"the load generator at {steady['client_percent']:.0f} % of a core")
    failed = [r for r in rounds if r["new_pid"] == r["old_pid"]]
    if failed:
        print(
            f"{len(failed)} of {len(rounds)} SIGHUPs did not replace the game: the gateway's "
            "log above says why",
            flush=True,
        )
    if sender.worst_lag_seconds > sender.interval_seconds:
        saturated.append(f"the sender {sender.worst_lag_seconds * 1000:.0f} ms behind")
    seconds = stopped - sender.started
    durations = [r["duration_ms"] for r in rounds if r["duration_ms"] is not None]
    for r in rounds:  # times on this process's clock, of no use in the JSON
        del r["hup"], r["window_end"]
    return {
        "players": players,
        "commands_sent": len(ledger.sent),
        "commands_per_second": round(len(ledger.sent) / seconds),
        "disconnected": sum(client.disconnected_at is not None for client in clients),
        "unanswered": ledger.unanswered,
        "answered_twice": ledger.answered_twice,
        "errors": dict(ledger.errors),
        "p50_ms_outside": round(percentile(outside, 0.5), 2),
        "p99_ms_outside": round(percentile(outside, 0.99), 2),
        "p99_ms_before_first_restart": round(percentile(before, 0.99), 2),
        "p50_ms_during": round(percentile(during, 0.5), 2),
        "p99_ms_during": round(percentile(during, 0.99), 2),
        "max_ms_during": round(max(during, default=float("nan")), 2),
        "commands_during": len(during),
        "restart_ms": round(statistics.median(durations), 1) if durations else None,
        "restarts_failed": len(failed),
        "restarts": rounds,
        "gateway_rss_before_mib": rounds[0]["gateway_rss_before_mib"] if rounds else None,
        "gateway_rss_after_mib": rounds[-1]["gateway_rss_after_mib"] if rounds else None,
        "steady": steady,
        "sender_worst_lag_ms": round(sender.worst_lag_seconds * 1000, 1),
        "saturated": saturated,
        "game": {
            key: state.get(key)
            for key in (
                "restarts",
                "failed_starts",
                "unanswered",
                "refused",
                "events_dropped",
                "slow_consumer_closes",
            )
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, nargs="+", default=[200, 100])
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between a player's commands"
    )
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the first SIGHUP")
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument(
        "--after", type=float, default=5.0, help="seconds of play after each game_ready"
    )
    args = parser.parse_args()
    began = time.monotonic()
    results = {}
    for players in args.players:
        r = run(
            run_load(players, args.interval, args.room_size, args.warmup, args.restarts, args.after)
        )
        results[str(players)] = r
        print(
            f"{players} players at {1 / args.interval:g}/s each ({r['commands_per_second']:,}/s): "
            f"disconnected {r['disconnected']}, unanswered {r['unanswered']}, answered twice "
            f"{r['answered_twice']}, errors {r['errors'] or 'none'}; p99 outside "
            f"{r['p99_ms_outside']:.1f} ms, during a restart {r['p99_ms_during']:.1f} ms "
            f"(max {r['max_ms_during']:.0f} ms, {r['commands_during']} commands); restart "
            f"{r['restart_ms']} ms ({r['restarts_failed']} failed); gateway RSS "
            f"{r['gateway_rss_before_mib']} → {r['gateway_rss_after_mib']} MiB; "
            f"steady {r['steady']}; "
            + (f"SATURATED: {', '.join(r['saturated'])}" if r["saturated"] else "not saturated"),
            flush=True,
        )
    seconds = time.monotonic() - began
    print(f"took {seconds:.0f} s")
    write_result(
        "game_restart",
        {
            "interval_seconds": args.interval,
            "room_size": args.room_size,
            "warmup_seconds": args.warmup,
            "restarts_per_load": args.restarts,
            "after_seconds": args.after,
            "rate_limits": RATE_LIMITS,
            "game_queue_per_player": DEFAULTS["game_queue_per_player"].default,
            "seconds": round(seconds),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
