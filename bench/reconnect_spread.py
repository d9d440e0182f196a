"""Reconnects after a restart: when N clients come back to a restarted server, with the
clients' jitter and without.

A real ``mudgate serve`` (the benchmarks' settings, its own shutdown timeout and reconnect
window) holds N clients; it gets SIGTERM, and a new one is started on the same port: as soon
as the old one has exited (``after-exit``: as systemd or a container restarts a server), or
at the SIGTERM (``at-sigterm``: a hand-over, the new one listening while the old one drains,
as a second node or a blue/green pair behind a proxy would take the clients; the old one stops
listening at once, and the new one binds beside its draining connections). Each client does what
docs/protocol.md asks of mudgate's clients (issue 22): on 1012 it waits uniform(0, window)
seconds before reconnecting, the window taken from the close reason's "reconnect within N s"
(else the welcome's ``reconnect_window``, else 5 s); without jitter it reconnects at once.
Every failed attempt (refused, reset, a timeout, a status other than 101, a close before the
welcome) is followed by the next after a capped, jittered exponential backoff (0.5 s x 2^n,
at most 30 s, times uniform(0.8, 1.2): mudgate.client's).

Reported per scenario and mode: when each client's welcome arrived from the new server,
from the SIGTERM (p1, p50, p99, the last) and from when the new server listened; the spread
between p1 and p99; the most welcomes in any 100 ms; how long a successful attempt took from
connect to welcome (the storm as each client feels it); the failed attempts by kind, before
the new server listened (the restart's downtime) and after (what the storm cost); the new
server's refusals (``/metrics``) and the kernel's listen-queue overflows (machine-wide,
``/proc/net/netstat``); and the new server's CPU time from when it listened to the last
welcome. The clients are raw WebSockets in this one process (uvloop), so the load generator
stays cheap; its CPU is reported beside.

    python bench/reconnect_spread.py [--clients 2000] [--repeat 1] [--scenarios at-sigterm]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import random
import re
import resource
import signal
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import TOKENS, handshake, read_frame, ws_frame
from harness import cpu_seconds, environment, free_port, run, write_result

MODES = {"jitter": True, "no-jitter": False}
# When the new server is started: once the old one has exited, or at the SIGTERM.
SCENARIOS = ("after-exit", "at-sigterm")
# What mudgate's clients do (docs/protocol.md, mudgate.client).
DEFAULT_WINDOW_SECONDS = 5.0
WINDOW_IN_REASON = re.compile(r"reconnect within ([0-9.]+) s")
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
OPEN_TIMEOUT_SECONDS = 10.0  # websockets' open_timeout
RESTART_CODES = frozenset({1012, 4010})
# The most the first connections may take, and the most a restart's storm may take.
CONNECT_CONCURRENCY = 100
STORM_TIMEOUT_SECONDS = 90.0
START_TIMEOUT_SECONDS = 30.0
PEAK_WINDOW_SECONDS = 0.1


class Restart:
    """One restart as the clients see it: when each was welcomed back, and what failed."""

    def __init__(self, clients: int, jitter: bool) -> None:
        self.jitter = jitter
        self.expected = clients
        self.sigterm_at = time.perf_counter()
        self.ready_at: float | None = None
        self.arrivals: list[float] = []
        self.handshakes: list[float] = []  # connect to welcome, of the attempts that worked
        self.failed_before_ready: Counter[str] = Counter()
        self.failed_after_ready: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()  # closed with a code that does not say come back
        self.first_attempt_failed = 0  # clients whose first attempt failed
        self.done = asyncio.Event()

    def arrived(self, handshake_seconds: float) -> None:
        self.arrivals.append(time.perf_counter() - self.sigterm_at)
        self.handshakes.append(handshake_seconds)
        self._check()

    def failed(self, kind: str) -> None:
        ready = self.ready_at is not None and time.perf_counter() >= self.ready_at
        (self.failed_after_ready if ready else self.failed_before_ready)[kind] += 1

    def ended(self, code: int | None) -> None:
        self.lost[str(code)] += 1
        self.expected -= 1
        self._check()

    def _check(self) -> None:
        if len(self.arrivals) >= self.expected:
            self.done.set()


class Bench:
    """What every client reads: the port, the restart under way, whether to stop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.restart: Restart | None = None
        self.finished = False


class Client:
    """One player: connected, waits for its close, comes back the way mudgate's clients do."""

    __slots__ = ("bench", "name", "reader", "welcome_window", "writer")

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.welcome_window: float | None = None

    async def connect(self) -> str | None:
        """One attempt: None once welcomed, else what failed."""
        writer = None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.bench.port)
                writer.write(handshake(f"/ws?token={TOKENS.issue(self.name)}"))
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101"):
                    writer.close()
                    return f"status {head[9:12].decode(errors='replace')}"
                opcode, payload = await read_frame(reader)
                if opcode == 0x8:
                    writer.close()
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return f"closed {code} before the welcome"
        except TimeoutError:
            kind = "timeout"
        except ConnectionRefusedError:
            kind = "refused"
        except (ConnectionResetError, BrokenPipeError):
            kind = "reset"
        except asyncio.IncompleteReadError:
            kind = "eof"
        except OSError as error:
            kind = type(error).__name__
        else:
            welcome = json.loads(payload)
            window = welcome.get("reconnect_window")
            self.welcome_window = float(window) if window is not None else None
            self.reader, self.writer = reader, writer
            return None
        if writer is not None:
            writer.transport.abort()
        return kind

    async def closed(self) -> tuple[int | None, str]:
        """Wait for the server's close and answer it: its code (None: the connection was
        lost) and reason."""
        assert self.reader is not None
        assert self.writer is not None
        try:
            while True:
                opcode, payload = await read_frame(self.reader)
                if opcode == 0x8:
                    self.writer.write(ws_frame(payload[:2], opcode=0x8))  # the close handshake
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return code, payload[2:].decode(errors="replace")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, ""
        finally:
            self.writer.close()
            self.reader = self.writer = None

    def window(self, reason: str) -> float:
        found = WINDOW_IN_REASON.search(reason)
        if found is not None:
            return float(found.group(1))
        return DEFAULT_WINDOW_SECONDS if self.welcome_window is None else self.welcome_window

    async def live(self) -> None:
        """Connected already: come back after every restart, until the bench is over."""
        while True:
            code, reason = await self.closed()
            restart = self.bench.restart
            if self.bench.finished or restart is None:
                return
            if code not in RESTART_CODES:
                restart.ended(code)
                return
            delay = random.uniform(0, self.window(reason)) if restart.jitter else 0.0
            attempt = 0
            while True:
                await asyncio.sleep(delay)
                started = time.perf_counter()
                failure = await self.connect()
                if failure is None:
                    restart.arrived(time.perf_counter() - started)
                    break
                restart.failed(failure)
                if attempt == 0:
                    restart.first_attempt_failed += 1
                backoff = BACKOFF_BASE_SECONDS * 2.0 ** min(attempt, 16)
                delay = min(BACKOFF_CAP_SECONDS, backoff) * random.uniform(0.8, 1.2)
                attempt += 1


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mudgate", "serve", "--port", str(port)]
    return subprocess.Popen([*command, "--log-level", "warning"], env=env)


async def listening(port: int, process: subprocess.Popen[bytes]) -> float:
    """Wait until ``process`` listens on ``port``: when it first did. Its own socket, not a
    connection that the old server's listening socket might still take."""
    watched = psutil.Process(process.pid)
    async with asyncio.timeout(START_TIMEOUT_SECONDS):
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in watched.net_connections("tcp")
            ):
                return time.perf_counter()
            await asyncio.sleep(0.005)


async def exited(process: subprocess.Popen[bytes]) -> float:
    """Wait until ``process`` has exited: when it did."""
    await asyncio.to_thread(process.wait)
    return time.perf_counter()


def listen_overflows() -> dict[str, int]:
    """The kernel's listen-queue overflows and drops so far, machine-wide."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    names, values = (line.split()[1:] for line in lines if line.startswith("TcpExt:"))
    counts = dict(zip(names, map(int, values), strict=True))
    return {name: counts[name] for name in ("ListenOverflows", "ListenDrops") if name in counts}


def refusals(port: int) -> dict[str, float]:
    """The server's refused connections and the protocol layer's events (``/metrics``)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counted = {}
    for line in text.splitlines():
        if line.startswith(("mudgate_refused_connections_total", "mudgate_socket_events_total")):
            name, value = line.rsplit(" ", 1)
            if float(value):
                counted[name] = float(value)
    return counted


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def peak(ordered: list[float], window: float) -> int:
    """The most arrivals within any ``window`` seconds."""
    return max(
        (bisect.bisect_right(ordered, at + window) - i for i, at in enumerate(ordered)), default=0
    )


async def restart(
    bench: Bench,
    server: subprocess.Popen[bytes],
    clients: int,
    *,
    jitter: bool,
    at_sigterm: bool,
    env: dict[str, str],
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """SIGTERM ``server``, start the next on its port (once it has exited, or at once), and
    wait until every client is back: the figures, and the new server."""
    kernel_before = listen_overflows()
    me = psutil.Process()
    client_cpu = me.cpu_times()
    bench.restart = record = Restart(clients, jitter)
    server.send_signal(signal.SIGTERM)
    old_exit = asyncio.ensure_future(exited(server))
    if not at_sigterm:
        await old_exit
    successor = start_server(bench.port, env)
    record.ready_at = ready_at = await listening(bench.port, successor)
    server_cpu = cpu_seconds([successor.pid])
    try:
        async with asyncio.timeout(STORM_TIMEOUT_SECONDS):
            await record.done.wait()
    except TimeoutError:
        pass
    server_cpu = cpu_seconds([successor.pid]) - server_cpu
    exited_at = await old_exit
    client_cpu_now = me.cpu_times()
    kernel_after = listen_overflows()
    arrivals = sorted(record.arrivals)
    if not arrivals:
        raise RuntimeError(f"no client came back: {dict(record.failed_after_ready)}")
    p1, p99 = percentile(arrivals, 0.01), percentile(arrivals, 0.99)
    listening_s = ready_at - record.sigterm_at
    handshakes = sorted(record.handshakes)
    figures = {
        "jitter": jitter,
        "old_server_exited_s": round(exited_at - record.sigterm_at, 3),
        "new_server_listening_s": round(listening_s, 3),
        "welcomed": len(arrivals),
        "not_back": clients - len(arrivals) - record.lost.total(),
        "lost": dict(record.lost),
        "first_s": round(arrivals[0], 3),
        "p1_s": round(p1, 3),
        "p50_s": round(percentile(arrivals, 0.5), 3),
        "p99_s": round(p99, 3),
        "last_s": round(arrivals[-1], 3),
        "spread_p1_p99_s": round(p99 - p1, 3),
        # From when the new server listened: what the storm looked like to it.
        "p50_after_listening_s": round(percentile(arrivals, 0.5) - listening_s, 3),
        "p99_after_listening_s": round(p99 - listening_s, 3),
        "handshake_p50_ms": round(percentile(handshakes, 0.5) * 1000, 1),
        "handshake_p99_ms": round(percentile(handshakes, 0.99) * 1000, 1),
        "peak_per_100ms": peak(arrivals, PEAK_WINDOW_SECONDS),
        "first_attempt_failed": record.first_attempt_failed,
        "failed_before_listening": dict(record.failed_before_ready),
        "failed_after_listening": dict(record.failed_after_ready),
        "server_refusals": await asyncio.to_thread(refusals, bench.port),
        "kernel_listen": {
            name: kernel_after[name] - kernel_before.get(name, 0) for name in kernel_after
        },
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_ms_per_reconnect": round(server_cpu / max(1, len(arrivals)) * 1000, 3),
        "client_cpu_s": round(
            client_cpu_now.user + client_cpu_now.system - client_cpu.user - client_cpu.system, 3
        ),
    }
    return figures, successor


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def main_async(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    port = free_port()
    env = environment(
        {
            "MUDGATE_SHUTDOWN_TIMEOUT": str(args.shutdown_timeout),
            "MUDGATE_RECONNECT_WINDOW": str(args.window),
            # 2,000 players are what this measures, not something to warn about.
            "MUDGATE_LARGE_STRUCTURE_THRESHOLD": "1000000",
        }
    )
    bench = Bench(port)
    server = start_server(port, env)
    await listening(port, server)
    clients = [Client(bench, f"p{i}") for i in range(args.clients)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def first_connect(client: Client) -> None:
        async with gate:
            failure = await client.connect()
        if failure is not None:
            raise RuntimeError(f"{client.name} could not connect: {failure}")

    await asyncio.gather(*(first_connect(client) for client in clients))
    lives = [asyncio.create_task(client.live()) for client in clients]
    runs: dict[str, list[dict[str, Any]]] = {
        f"{scenario}/{mode}": [] for scenario in args.scenarios for mode in MODES
    }
    try:
        for repeat in range(args.repeat):
            for scenario in args.scenarios:
                order = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    figures, server = await restart(
                        bench,
                        server,
                        args.clients,
                        jitter=MODES[mode],
                        at_sigterm=scenario == "at-sigterm",
                        env=env,
                    )
                    runs[f"{scenario}/{mode}"].append(figures)
                    report_run(f"{scenario}/{mode}", figures, args.clients)
    finally:
        bench.finished = True
        server.send_signal(signal.SIGTERM)
        await exited(server)
        for life in lives:
            life.cancel()
        await asyncio.gather(*lives, return_exceptions=True)
    return runs


def report_run(name: str, figures: dict[str, Any], clients: int) -> None:
    print(
        f"{name:20} welcomed {figures['welcomed']}/{clients}: p50 {figures['p50_s']:.2f} s, p99 "
        f"{figures['p99_s']:.2f} s, spread {figures['spread_p1_p99_s']:.2f} s, peak "
        f"{figures['peak_per_100ms']}/100 ms, handshake p99 {figures['handshake_p99_ms']:.0f} ms; "
        f"new server listening at "
        f"{figures['new_server_listening_s']:.2f} s, CPU {figures['server_cpu_s']:.2f} s; failed "
        f"before {sum(figures['failed_before_listening'].values())}, after "
        f"{sum(figures['failed_after_listening'].values())}",
        flush=True,
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The medians over the runs of one scenario and mode."""
    medians = {key: float(statistics.median(run[key] for run in runs)) for key in FIGURES}
    for key in ("failed_before_listening", "failed_after_listening"):
        medians[key] = statistics.median(sum(run[key].values()) for run in runs)
    return medians


FIGURES = (
    "p50_s", "p99_s", "last_s", "spread_p1_p99_s", "p50_after_listening_s",
    "p99_after_listening_s", "peak_per_100ms", "handshake_p50_ms", "handshake_p99_ms",
    "server_cpu_s", "old_server_exited_s", "new_server_listening_s", "first_attempt_failed",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--shutdown-timeout", type=float, default=5.0, help="seconds")
    parser.add_argument("--window", type=float, default=5.0, help="reconnect window, seconds")
    args = parser.parse_args()
    raise_descriptor_limit(args.clients + 1024)
    runs = run(main_async(args))
    medians = {name: summarize(by_run) for name, by_run in runs.items()}
    ratios = {}
    for scenario in args.scenarios:
        jittered, plain = medians[f"{scenario}/jitter"], medians[f"{scenario}/no-jitter"]
        ratios[scenario] = {
            key: round(jittered[key] / plain[key], 2) for key in jittered if plain[key]
        }
        print(
            f"{scenario}, jitter / no jitter: "
            + ", ".join(f"{key} {value}x" for key, value in ratios[scenario].items())
        )
    write_result(
        "reconnect_spread",
        {
            "clients": args.clients,
            "repeat": args.repeat,
            "shutdown_timeout_s": args.shutdown_timeout,
            "reconnect_window_s": args.window,
            "backoff": {
                "base_s": BACKOFF_BASE_SECONDS,
                "cap_s": BACKOFF_CAP_SECONDS,
                "jitter": [0.8, 1.2],
            },
            "medians": medians,
            "ratio_jitter_over_no_jitter": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
