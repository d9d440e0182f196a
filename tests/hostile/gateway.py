"""A real ``mudgate serve`` process to attack, and a healthy player who must be served
throughout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

from mudgate.auth import Authenticator

from ..conftest import ADMIN_TOKEN, SECRET_KEY
from ..e2e.clients import Player

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """``python -m mudgate serve`` on a free port, with ``settings`` as MUDGATE_* variables and,
    optionally, a lower file-descriptor limit (``nofile``) or inside the cgroup whose
    ``cgroup.procs`` file is ``cgroup_procs``."""

    def __init__(
        self,
        log: Path,
        nofile: int | None = None,
        cgroup_procs: Path | None = None,
        **settings: object,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.nofile = nofile
        self.cgroup_procs = cgroup_procs
        self.env = os.environ | {
            "MUDGATE_SECRET_KEY": SECRET_KEY,
            "MUDGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "MUDGATE_LOG_FORMAT": "json",
            **{f"MUDGATE_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.authenticator = Authenticator(SECRET_KEY, 3600)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        command = [sys.executable, "-m", "mudgate", "serve", "--port", str(self.port)]
        if self.nofile is not None:
            # The shell lowers the limit, soft and hard, then becomes the server.
            command = ["sh", "-c", f'ulimit -n {self.nofile} && exec "$@"', "sh", *command]
        if self.cgroup_procs is not None:
            # The shell moves itself into the cgroup, then becomes the server.
            command = ["sh", "-c", f'echo $$ > {self.cgroup_procs} && exec "$@"', "sh", *command]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                self.get("/health/live")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mudgate serve did not start:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM, as an operator stops it; the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_mb(self) -> float:
        return float(psutil.Process(self.pid).memory_info().rss) / MIB

    def open_files(self) -> int:
        return psutil.Process(self.pid).num_fds()

    def token(self, player: str) -> str:
        return self.authenticator.issue(player)

    def ws(self, player: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={self.token(player)}"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def memory(self) -> dict[str, Any]:
        report: dict[str, Any] = self.get("/monitoring/memory")
        return report

    def sockets(self) -> dict[str, Any]:
        sockets: dict[str, Any] = self.memory()["sockets"]
        return sockets


class Healthy:
    """A player who pings every ``interval`` while an attack runs: every ping must be
    answered, and the round trips are kept for the record. Ten a second is what the default
    per-player rate allows for ever (a faster player is limited once its burst is spent)."""

    def __init__(self, gateway: Gateway, interval: float = 0.1) -> None:
        self.gateway = gateway
        self.interval = interval
        self.round_trips: list[float] = []
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> Healthy:
        self.player = await Player.connect(self.gateway.ws("healthy"))
        await self.player.next("welcome")
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        sequence = 0
        while not self._stopping:
            sequence += 1
            started = time.perf_counter()
            try:
                await self.player.send(op="ping", id=sequence)
                assert (await self.player.next("pong", timeout=10))["id"] == sequence
            except Exception as error:  # recorded; assert_served() fails the test
                self.failures.append(repr(error))
                return
            self.round_trips.append(time.perf_counter() - started)
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc_info: object) -> None:
        # The ping in flight (at least one) is answered before the player leaves.
        assert self._task is not None
        self._stopping = True
        await asyncio.wait_for(self._task, timeout=15)
        await self.player.close()

    def assert_served(self) -> None:
        assert not self.failures, self.failures
        assert self.round_trips, "the healthy player was never answered"


async def open_connection(
    port: int, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the gateway; ``rcvbuf`` makes a client that does not read
    stop the server sooner (the kernel holds less for it)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


@asynccontextmanager
async def connection(
    port: int, *, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``open_connection``, dropped at the end."""
    reader, writer = await open_connection(port, rcvbuf=rcvbuf)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


class PeakRSS:
    """The server's highest RSS while the block runs, sampled every 10 ms:
    ``async with PeakRSS(server) as peak: ...; peak.mb``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.mb = gateway.rss_mb()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, self.gateway.rss_mb())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> PeakRSS:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.mb = max(self.mb, self.gateway.rss_mb())


async def settled(
    gateway: Gateway, *, quiet_cpu_seconds: float = 0.02, timeout: float = 30.0
) -> None:
    """Wait until the server has done what it was sent: its CPU time stops moving (less
    than ``quiet_cpu_seconds`` in each of three 0.2 s intervals in a row, so a server merely
    starved of CPU for a moment does not pass for done)."""
    process = psutil.Process(gateway.pid)

    def busy() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    async with asyncio.timeout(timeout):
        last, quiet = busy(), 0
        while quiet < 3:
            await asyncio.sleep(0.2)
            now = busy()
            quiet = quiet + 1 if now - last < quiet_cpu_seconds else 0
            last = now


async def poll(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` (run in a thread: it may do blocking I/O) until it is true."""
    async with asyncio.timeout(timeout):
        while not (result := await asyncio.to_thread(predicate)):
            await asyncio.sleep(0.05)
        return result
