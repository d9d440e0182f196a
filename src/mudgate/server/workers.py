"""``serve_workers``: several processes on one port, each a node of the Redis backplane.

The supervisor serves nothing. It forks each worker before anything has started (no event
loop, thread or Redis connection exists yet), so each worker builds its own app (its own hub,
backplane node and connections) and binds its own listening socket with ``SO_REUSEPORT``:
the kernel spreads new connections over the workers. Rooms, channels, tells, ``who`` and the
per-player connection cap hold across them through the backplane, as across machines.

A worker that dies is started again (its players reconnect, to whichever worker the kernel
picks); one that dies soon after starting waits longer each time, so a crash loop does not
spin. A worker that hangs is worse than a dead one: its listening socket stays in the port's
group, so the kernel keeps handing it a share of the new connections, which nobody accepts.
So each worker's event loop sends the supervisor a heartbeat down a pipe, and a worker not
heard from for ``worker_heartbeat_timeout`` is killed and started again like a dead one.
SIGTERM or SIGINT stops every worker gracefully (each closes its players with 1012), then the
supervisor exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from pydantic import SecretStr

from ..logs import configure_logging
from ..settings import Settings
from .serve import MudgateServer, Servable, create_server, reuse_port_socket

__all__ = ["Supervisor", "serve_workers"]

logger = logging.getLogger("mudgate")

# A worker that lived less than this was not healthy: the next start waits twice as long.
HEALTHY_SECONDS = 10.0
FIRST_RESTART_DELAY = 0.5
LAST_RESTART_DELAY = 30.0
# How long, past shutdown_timeout, stopped workers have to exit before they are killed.
STOP_GRACE_SECONDS = 10.0
# How often a starting worker looks whether its server listens yet, to send its first beat.
FIRST_BEAT_POLL_SECONDS = 0.01
# A worker's loop beats at least this many times per heartbeat timeout, and at least once a
# second: a worker is killed only once its loop has missed every beat of a whole timeout, so a
# loop merely late by less than the timeout less one interval is never taken for hung.
HEARTBEATS_PER_TIMEOUT = 4
LONGEST_HEARTBEAT_INTERVAL = 1.0

# Builds a worker's ASGI app and the gateway it serves from the settings (the supervisor's,
# with the shared secrets).
AppFactory = Callable[[Settings], tuple[Any, Servable]]


@dataclass
class Worker:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    restart_delay: float = FIRST_RESTART_DELAY
    restart_at: float | None = None  # when a dead worker starts again
    heartbeats: int | None = None  # the read end of the pipe its event loop beats into
    heard_at: float | None = None  # its last heartbeat; None before the first one

    def heard(self, now: float) -> None:
        self.heard_at = now

    def silent_seconds(self, now: float) -> float:
        """How long its event loop has not been heard from; 0 for a worker not running or
        still starting (the clock starts at its first heartbeat, sent once it listens:
        until then it takes no connection, so a slow start-up costs nobody anything)."""
        if self.process is None or self.heard_at is None:
            return 0.0
        return max(0.0, now - self.heard_at)


class Supervisor:
    """Starts ``settings.workers`` workers, restarts those that die or hang, stops them all on
    a signal. ``build(settings)`` makes a worker's ASGI app and its gateway; it runs in the
    worker, after the fork. ``settings.worker_heartbeat_timeout`` (seconds, 0: never) is how
    long a worker may go unheard before it counts as hung."""

    def __init__(
        self,
        build: AppFactory,
        settings: Settings,
        log_level: str = "info",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.build = build
        self.settings = _shared_secrets(settings)
        self.log_level = log_level
        self.clock = clock
        self.workers = [Worker(index) for index in range(1, settings.workers + 1)]
        self.heartbeat_timeout = settings.worker_heartbeat_timeout
        self.hung_workers_replaced = 0
        self._context = multiprocessing.get_context("fork")
        self._stopping = False
        self._wakeup_read, self._wakeup_write = -1, -1

    def run(self) -> int:
        """Serve until a signal; the exit status (0 once every worker stopped)."""
        port = check_port(self.settings.host, self.settings.port)
        if port != self.settings.port:  # port 0: one free port, the same for every worker
            self.settings = self.settings.model_copy(update={"port": port})
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        # SIGHUP: each worker starts a fresh game process (`--game`); nobody is disconnected.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward_sighup)
        try:
            logger.info(
                "supervising %d workers on http://%s:%d",
                len(self.workers),
                self.settings.host,
                self.settings.port,
                extra={"workers": len(self.workers)},
            )
            for worker in self.workers:
                self._start(worker)
            while not self._stopping:
                self._wait()
                self._replace_hung()
                self._reap()
                self._restart_due()
            return self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
            for worker in self.workers:
                self._stop_listening(worker)

    def _forward_sighup(self, signum: int, frame: FrameType | None) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        with contextlib.suppress(BlockingIOError):  # already woken
            os.write(self._wakeup_write, b"\0")

    def _start(self, worker: Worker) -> None:
        heartbeats, beat_into = os.pipe() if self.heartbeat_timeout else (None, None)
        try:
            process = self._context.Process(
                target=_run_worker,
                args=(self.build, self.settings, self.log_level, worker.index, beat_into),
                name=f"mudgate-worker-{worker.index}",
            )
            process.start()
        except BaseException:
            if heartbeats is not None:
                os.close(heartbeats)  # no worker to listen to (fork failed: EAGAIN, ENOMEM)
            raise
        finally:
            if beat_into is not None:
                os.close(beat_into)  # the worker's end
        worker.process, worker.started_at, worker.restart_at = process, self.clock(), None
        worker.heartbeats, worker.heard_at = heartbeats, None
        logger.info(
            "worker %d started (pid %d)",
            worker.index,
            process.pid,
            extra={"worker": worker.index, "pid": process.pid},
        )

    def _wait(self) -> None:
        """Until a worker exits or beats, a signal comes, or a restart or a verdict is due."""
        sentinels: list[Any] = [self._wakeup_read]
        sentinels += [w.process.sentinel for w in self.workers if w.process is not None]
        listening = {w.heartbeats: w for w in self.workers if w.heartbeats is not None}
        ready = multiprocessing.connection.wait(sentinels + list(listening), self.wait_seconds())
        if self._wakeup_read in ready:
            os.read(self._wakeup_read, 64)
        now = self.clock()
        for heartbeats, worker in listening.items():
            if heartbeats in ready:
                if os.read(heartbeats, 4096):
                    worker.heard(now)
                else:  # the worker exited (or closed its end): its sentinel tells the rest
                    self._stop_listening(worker)

    def wait_seconds(self) -> float | None:
        """How long the supervisor may sleep: until the next restart is due, or until the
        first running worker would have been silent for the whole heartbeat timeout (None:
        until something happens)."""
        due = [worker.restart_at for worker in self.workers if worker.restart_at is not None]
        if self.heartbeat_timeout:
            due += [
                worker.heard_at + self.heartbeat_timeout
                for worker in self.workers
                if worker.process is not None and worker.heard_at is not None
            ]
        return max(0.0, min(due) - self.clock()) if due else None

    def hung(self) -> list[Worker]:
        """The running workers not heard from for ``worker_heartbeat_timeout``.

        Judged right after ``_wait`` has read every pipe that was ready, so a worker whose
        heartbeat is waiting in its pipe is heard first: a supervisor that was itself held up
        (stopped, starved of CPU) does not take its live workers for hung."""
        if not self.heartbeat_timeout:
            return []
        now = self.clock()
        return [w for w in self.workers if w.silent_seconds(now) >= self.heartbeat_timeout]

    def _replace_hung(self) -> None:
        """Kill each hung worker: once it is gone, so is its listening socket, and the kernel
        hands new connections to the others; its players' connections are reset and they
        reconnect. ``_reap`` then starts it again like any worker that died. Once stopping,
        ``_stop_all`` deals with every worker, hung or not."""
        if self._stopping:
            return
        now = self.clock()
        for worker in self.hung():
            process = worker.process
            assert process is not None  # only a running worker is ever silent
            silent = worker.silent_seconds(now)
            # Judged once: it is as good as dead, and its sentinel tells when it is gone.
            worker.heard_at = None
            self._stop_listening(worker)
            self.hung_workers_replaced += 1
            logger.error(
                "worker %d (pid %d) was not heard from for %.1f s (its event loop is blocked or "
                "the process is stopped); killing it to start it again (%d hung workers "
                "replaced so far)",
                worker.index,
                process.pid,
                silent,
                self.hung_workers_replaced,
                extra={
                    "worker": worker.index,
                    "pid": process.pid,
                    "silent_seconds": round(silent, 3),
                    "hung_workers_replaced": self.hung_workers_replaced,
                },
            )
            process.kill()  # SIGKILL: a stopped process dies of it too; SIGTERM would wait

    def _stop_listening(self, worker: Worker) -> None:
        if worker.heartbeats is not None:
            os.close(worker.heartbeats)
            worker.heartbeats = None

    def _reap(self) -> None:
        now = self.clock()
        for worker in self.workers:
            process = worker.process
            if process is None or process.is_alive():
                continue
            process.join()
            self._stop_listening(worker)
            lived = now - worker.started_at
            worker.restart_delay = (
                min(worker.restart_delay * 2, LAST_RESTART_DELAY)
                if lived < HEALTHY_SECONDS
                else FIRST_RESTART_DELAY
            )
            worker.process, worker.restart_at = None, now + worker.restart_delay
            if not self._stopping:
                logger.error(
                    "worker %d (pid %d) exited with %s after %.0f s; starting it again in "
                    "%.1f s (its players reconnect)",
                    worker.index,
                    process.pid,
                    _how_it_exited(process.exitcode),
                    lived,
                    worker.restart_delay,
                    extra={"worker": worker.index, "pid": process.pid},
                )

    def _restart_due(self) -> None:
        now = self.clock()
        for worker in self.workers:
            if not self._stopping and worker.restart_at is not None and worker.restart_at <= now:
                self._start(worker)

    def _stop_all(self) -> int:
        running = [w.process for w in self.workers if w.process is not None]
        logger.info("stopping %d workers", len(running))
        for process in running:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = self.clock() + self.settings.shutdown_timeout + STOP_GRACE_SECONDS
        for process in running:
            process.join(max(0.0, deadline - self.clock()))
            if process.is_alive():
                logger.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        failed = [p for p in running if p.exitcode not in (0, -signal.SIGTERM)]
        return 1 if failed else 0


def serve_workers(build: AppFactory, settings: Settings, log_level: str = "info") -> None:
    """Serve with ``settings.workers`` processes (``mudgate serve --workers N``) until a
    signal; ``build(settings)`` makes each worker's app and gateway, ``(app, gateway)``.
    Exits with the supervisor's status.

    ``settings`` has a backplane (Settings refuses several workers without one).
    """
    configure_logging(log_level, settings.log_format)
    supervisor = Supervisor(build, settings, log_level)
    try:
        status = supervisor.run()
    except OSError as error:
        sys.exit(f"mudgate: cannot listen on {settings.host}:{settings.port}: {error}")
    sys.exit(status)


def check_port(host: str, port: int) -> int:
    """Fail before starting any worker if the port is taken (by a server without
    SO_REUSEPORT) or the address is not this machine's (OSError); the port, chosen by the
    kernel if ``port`` is 0."""
    with reuse_port_socket(host, port) as probe:
        return int(probe.getsockname()[1])


def _shared_secrets(settings: Settings) -> Settings:
    """The secret key and admin token every worker must share: generated here, once, when
    they are not set (a token one worker signs is then valid on every other)."""
    update: dict[str, SecretStr] = {}
    if settings.secret_key is None:
        update["secret_key"] = SecretStr(secrets.token_urlsafe(32))
        logger.warning(
            "MUDGATE_SECRET_KEY is not set: the workers share a random key, so player tokens "
            "will not survive a restart"
        )
    if settings.admin_token is None:
        token = secrets.token_urlsafe(24)
        update["admin_token"] = SecretStr(token)
        logger.warning("MUDGATE_ADMIN_TOKEN is not set; this run's admin token: %s", token)
    return settings.model_copy(update=update) if update else settings


def _how_it_exited(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"status {exitcode}"


def _run_worker(
    build: AppFactory, settings: Settings, log_level: str, index: int, beat_into: int | None
) -> None:
    """A worker's life: serve ``build(settings)``'s app on the shared port until stopped,
    beating into the pipe ``beat_into`` (None: the supervisor does not listen)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The supervisor forwards SIGHUP; a worker with a game (`--game`) starts a fresh one.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(log_level, settings.log_format)
    # A worker started again takes its predecessor's node id, and so its place in the
    # cluster at once: the players the dead worker held leave `who` as soon as it connects.
    node_id = f"{settings.node_id or f'{settings.node_name}-{os.getppid()}'}-w{index}"
    settings = settings.model_copy(update={"node_id": node_id})
    app, gateway = build(settings)
    server, sock = create_server(
        app, settings, sockets=gateway.sockets, drain=gateway.drain, reuse_port=True
    )
    logger.info("worker %d serving", index, extra={"worker": index, "pid": os.getpid()})
    # What server.run(sockets=[sock]) does, with the heartbeat beside the server in its loop.
    interval = min(
        settings.worker_heartbeat_timeout / HEARTBEATS_PER_TIMEOUT, LONGEST_HEARTBEAT_INTERVAL
    )
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve(server, sock, beat_into, interval))


async def _serve(
    server: MudgateServer, sock: socket.socket, beat_into: int | None, interval_seconds: float
) -> None:
    """Serve until stopped, the heartbeat beside the server in its event loop."""
    beating = None
    if beat_into is not None:
        beating = asyncio.create_task(
            _beat(server, beat_into, interval_seconds), name="mudgate-heartbeat"
        )
    try:
        await server.serve(sockets=[sock])
    finally:
        if beating is not None:
            beating.cancel("mudgate: shutting down")
            await asyncio.wait((beating,))


async def _beat(server: MudgateServer, beat_into: int, interval_seconds: float) -> None:
    """The worker's heartbeat: a byte down the supervisor's pipe every ``interval_seconds``,
    written by the event loop itself, so that a loop that is blocked stops beating as surely
    as a process that is stopped. The first beat waits until the server listens: a start-up
    (the lifespan, connecting to Redis) takes no connection, so it is never judged."""
    os.set_blocking(beat_into, False)
    # The first beat as soon as the server listens: it takes connections from then on, and a
    # worker stopped before its first beat would never be judged.
    while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, not an Event)
        await asyncio.sleep(FIRST_BEAT_POLL_SECONDS)
    while True:
        # Full: the supervisor is alive but behind. Broken: it is gone, and the parent-death
        # signal ends this worker.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(beat_into, b".")
        await asyncio.sleep(interval_seconds)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies (even by SIGKILL), so no orphan
    keeps serving the port."""
    parent = os.getppid()
    name = ctypes.util.find_library("c")
    if name is not None:
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request was made
        sys.exit(1)
