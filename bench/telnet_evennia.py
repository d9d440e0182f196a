"""Server RSS per idle telnet connection: mudgate against Evennia (Twisted + Django, a portal
process that holds the sockets and a server process that runs the game), side by side in one
run, with and without MCCP2.

Each run starts a fresh server, warms it up with 50 connections that come and go, then opens
N that stay idle, and reads every server process's RSS before and after; the server's CPU
over the N, per connection, is beside it. Two stages: ``screen``, connections that got the
login screen (mudgate's name prompt, Evennia's connection screen) and, with MCCP2, started
the compressed stream; ``guest``, connections signed in as guests (``guest`` at mudgate's
prompt, ``connect guest`` at Evennia's, which makes an account and a character for each).
Contenders alternate, in the reverse order every other repeat; figures are medians over
--repeat runs.

Evennia is not one of mudgate's dependencies: install it in a virtualenv of its own and make
it a game directory, with the settings that let thousands of guests in from one address (the
connection rate, guest names, login throttles) and a fast password hasher (each guest account
gets a hashed random password: Django's PBKDF2 would make the sign-ins, not the idle
connections, the measurement)::

    python3 -m venv /tmp/evennia-venv && /tmp/evennia-venv/bin/pip install evennia
    cd /tmp && PATH=/tmp/evennia-venv/bin:$PATH evennia --init evgame
    cat bench/peers/evennia_settings.py >> /tmp/evgame/server/conf/settings.py
    cd /tmp/evgame && PATH=/tmp/evennia-venv/bin:$PATH evennia migrate
    python bench/telnet_evennia.py --evennia /tmp/evgame --evennia-bin /tmp/evennia-venv/bin

Not in ``make bench``, which installs nothing outside the project.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_seconds, free_port, run, start, stop, write_result  # noqa: E402
from telnet_client import (  # noqa: E402
    DO_MCCP2,
    PROMPT,
    SERVER_ENV,
    START_MCCP2,
    Inflater,
    TelnetClient,
    wait_for_port,
)

CONTENDERS = ("mudgate", "mudgate-mccp2", "evennia", "evennia-mccp2")
# Evennia's login screen ends with this; its guest's first line starts with the second.
EVENNIA_SCREEN = b"will re-show this screen"
EVENNIA_IN = b"You become"
WARMUP = 50
SETTLE_SECONDS = 3.0  # Evennia gives a client that answers no negotiation 2 s
STAGES = ("screen", "guest")
RETRIES = 3
SIGN_IN_SECONDS = 30.0
LOGIN_TIMEOUT = {"MUDGATE_TELNET_LOGIN_TIMEOUT": "600"}


class Evennia:
    """An Evennia game directory, started and stopped with its launcher."""

    def __init__(self, game: Path, bin_dir: Path, port: int) -> None:
        self.game = game
        self.env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("PYTHONPATH", None)  # mudgate's, not Evennia's
        self.port = port

    def launcher(self, *arguments: str) -> None:
        subprocess.run(
            ["evennia", *arguments],
            cwd=self.game,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> list[int]:
        """Start the portal and the server: their pids."""
        self.launcher("start")
        wait_for_port(self.port)
        pids = self.game / "server"
        return [int((pids / f"{name}.pid").read_text()) for name in ("portal", "server")]

    def stop(self) -> None:
        self.launcher("stop")


async def evennia_client(port: int, mccp: bool, guest: bool) -> asyncio.StreamWriter:
    """A connection to Evennia that got the login screen (and, with ``guest``, signed in)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if mccp:
        writer.write(DO_MCCP2)
    inflater = Inflater(mccp)
    await read_until(reader, inflater, EVENNIA_SCREEN)
    if guest:
        writer.write(b"connect guest\r\n")
        await read_until(reader, inflater, EVENNIA_IN)
    if mccp and not inflater.started:
        raise RuntimeError("Evennia did not start MCCP2")
    return writer


async def mudgate_screen(port: int, mccp: bool) -> asyncio.StreamWriter:
    """A connection to mudgate at its name prompt (compressed from there on, with ``mccp``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(PROMPT)
    if mccp:
        writer.write(DO_MCCP2)
        await reader.readuntil(START_MCCP2)
    return writer


async def read_until(reader: asyncio.StreamReader, inflater: Inflater, marker: bytes) -> None:
    text = b""
    while marker not in text:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError(f"closed: {text[-300:]!r}")
        text += inflater.feed(chunk)


async def connect(
    contender: str, stage: str, port: int, count: int, concurrency: int
) -> list[asyncio.StreamWriter]:
    """``count`` connections at ``stage``, ``concurrency`` at a time: their writers."""
    mccp = contender.endswith("-mccp2")
    guest = stage == "guest"
    gate = asyncio.Semaphore(concurrency)
    retried: list[int] = []

    async def one() -> asyncio.StreamWriter:
        async with gate:
            if contender.startswith("evennia"):
                # Evennia 5.0.1 sometimes loses a guest signing in beside others (its log:
                # "'NoneType' object has no attribute 'characters'" in authenticate) and
                # never answers it: such a client gives up and tries again.
                for _ in range(RETRIES):
                    try:
                        async with asyncio.timeout(SIGN_IN_SECONDS):
                            return await evennia_client(port, mccp, guest)
                    except TimeoutError:
                        retried.append(1)
                raise RuntimeError(f"Evennia answered none of {RETRIES} sign-ins")
            if guest:
                return (await TelnetClient.open(port, mccp=mccp)).writer
            return await mudgate_screen(port, mccp)

    writers = list(await asyncio.gather(*(one() for _ in range(count))))
    if retried:
        print(f"  {len(retried)} sign-in(s) to Evennia lost and tried again", flush=True)
    return writers


def rss(pids: list[int]) -> list[int]:
    return [psutil.Process(pid).memory_info().rss for pid in pids]


async def measure(
    contender: str, stage: str, pids: list[int], port: int, connections: int, concurrency: int
) -> dict[str, Any]:
    for writer in await connect(contender, stage, port, WARMUP, concurrency):
        writer.transport.abort()
    await asyncio.sleep(SETTLE_SECONDS)
    before = rss(pids)
    cpu = cpu_seconds(pids)
    began = time.perf_counter()
    writers = await connect(contender, stage, port, connections, concurrency)
    seconds = time.perf_counter() - began
    cpu = cpu_seconds(pids) - cpu
    await asyncio.sleep(SETTLE_SECONDS)
    after = rss(pids)
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0.5)
    per_process = [(a - b) / connections / 1024 for a, b in zip(after, before, strict=True)]
    return {
        "kib_per_connection": sum(per_process),
        "kib_per_connection_by_process": per_process,
        "rss_before_mib": sum(before) / 2**20,
        "cpu_us_per_connection": cpu / connections * 1e6,
        "connections_per_second": connections / seconds,
    }


def run_once(
    contender: str, stage: str, connections: int, concurrency: int, evennia: Evennia
) -> dict[str, Any]:
    if contender.startswith("evennia"):
        pids = evennia.start()
        try:
            return run(measure(contender, stage, pids, evennia.port, connections, concurrency))
        finally:
            evennia.stop()
    port, telnet_port = free_port(), free_port()
    # The name prompt waits a minute by default: long enough, but not to spare.
    env = SERVER_ENV | {"MUDGATE_TELNET_PORT": str(telnet_port)} | LOGIN_TIMEOUT
    process = start("mudgate", port, env)
    try:
        wait_for_port(telnet_port)
        return run(measure(contender, stage, [process.pid], telnet_port, connections, concurrency))
    finally:
        stop(process)


def summarize(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (KiB with min and max, and each process's on its own: Evennia's
    portal holds the sockets, its server the sessions)."""
    kib = [o["kib_per_connection"] for o in outcomes]
    return {
        f"median_{figure}": round(statistics.median(o[figure] for o in outcomes), 1)
        for figure in ("kib_per_connection", "cpu_us_per_connection", "connections_per_second")
    } | {
        "min_kib_per_connection": round(min(kib), 1),
        "max_kib_per_connection": round(max(kib), 1),
        "median_kib_by_process": [
            round(statistics.median(o["kib_per_connection_by_process"][i] for o in outcomes), 1)
            for i in range(len(outcomes[0]["kib_per_connection_by_process"]))
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evennia", type=Path, required=True, help="the game directory")
    parser.add_argument("--evennia-bin", type=Path, required=True, help="its venv's bin/")
    parser.add_argument("--evennia-port", type=int, default=4000, help="its TELNET_PORTS")
    parser.add_argument(
        "--connections", type=int, nargs=2, default=[2000, 500], metavar=("SCREEN", "GUEST"),
        help="connections at the login screen, and signed in (Evennia signs in ~10 guests/s)",
    )  # fmt: skip
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--concurrency", type=int, default=50, help="connecting at once")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    evennia = Evennia(args.evennia.resolve(), args.evennia_bin.resolve(), args.evennia_port)
    evennia.launcher("--version")
    counts = dict(zip(STAGES, args.connections, strict=True))
    began = time.monotonic()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        stage: {c: [] for c in args.contenders} for stage in args.stages
    }
    for stage in args.stages:
        for repeat in range(args.repeat):
            for contender in args.contenders if repeat % 2 == 0 else args.contenders[::-1]:
                outcome = run_once(contender, stage, counts[stage], args.concurrency, evennia)
                runs[stage][contender].append(outcome)
                by_process = " + ".join(
                    f"{k:.1f}" for k in outcome["kib_per_connection_by_process"]
                )
                print(
                    f"run {repeat + 1}: {stage:6} {counts[stage]:5} {contender:14} "
                    f"{outcome['kib_per_connection']:6.1f} KiB/connection ({by_process}), "
                    f"{outcome['cpu_us_per_connection']:7.0f} µs CPU each, "
                    f"{outcome['connections_per_second']:6.0f}/s",
                    flush=True,
                )
    results = {
        stage: {contender: summarize(outcomes) for contender, outcomes in by.items()}
        for stage, by in runs.items()
    }
    ratios = {
        stage: {
            f"{c} / {o}": {
                figure: round(by[c][f"median_{figure}"] / by[o][f"median_{figure}"], 2)
                for figure in ("kib_per_connection", "cpu_us_per_connection")
                if by[o][f"median_{figure}"]
            }
            for c, o in (("evennia", "mudgate"), ("evennia-mccp2", "mudgate-mccp2"))
            if c in by and o in by
        }
        for stage, by in results.items()
    }
    for stage, by in results.items():
        for contender, r in by.items():
            print(f"{stage:6} {contender:14} {r}")
        print(f"{stage:6} ratios: {ratios[stage]}")
    seconds = time.monotonic() - began
    print(f"took {seconds:.0f} s")
    version = subprocess.run(
        ["evennia", "--version"],
        cwd=evennia.game,
        env=evennia.env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    write_result(
        "telnet_evennia",
        {
            "connections": counts,
            "repeat": args.repeat,
            "seconds": round(seconds),
            "evennia": " ".join(version[:2]),
            "results": results,
            "ratios": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
