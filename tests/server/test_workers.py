"""The supervisor's verdict on a worker that stopped beating: when it is hung, when the
supervisor wakes to judge it, and what it does then; and the heartbeat pipes it holds. A fake
clock and fake processes: nothing forks and nothing sleeps (tests/hostile/test_workers.py
stops a real worker)."""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any, cast

import pytest

from mudgate.server.workers import Supervisor, Worker

from ..conftest import FakeClock, make_settings

TIMEOUT = 10.0


class FakeProcess:
    """A worker's process as the supervisor sees it, whose kill() is only recorded."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)


def supervisor(clock: FakeClock, timeout: float = TIMEOUT) -> Supervisor:
    settings = make_settings(
        workers=2, backplane="redis://127.0.0.1:1/0", worker_heartbeat_timeout=timeout
    )
    return Supervisor(lambda settings: None, settings, clock=clock)


def running(worker: Worker, pid: int) -> FakeProcess:
    process = FakeProcess(pid)
    worker.process = cast(Any, process)
    return process


class Pipes:
    """Real pipes; each end the test still holds is closed at its end."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def open(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self.held += [read_end, write_end]
        return read_end, write_end

    def hand_over(self, fd: int) -> int:
        """``fd`` is someone else's to close now (the supervisor's)."""
        self.held.remove(fd)
        return fd

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    opened = Pipes()
    yield opened
    opened.close()


@pytest.fixture
def boss(clock: FakeClock) -> Iterator[Supervisor]:
    """A supervisor whose workers are not started; the pipes handed to it are closed as
    ``run()`` closes them."""
    made = supervisor(clock)
    yield made
    for worker in made.workers:
        made._stop_listening(worker)


def listened(boss: Supervisor, worker: Worker, pipes: Pipes) -> int:
    """Give ``worker`` a sentinel and a heartbeat pipe, and the supervisor its wake-up pipe,
    as ``run()`` and ``_start`` do; the write end of the heartbeat pipe."""
    cast(Any, worker.process).sentinel = pipes.open()[0]
    read_end, write_end = pipes.open()
    worker.heartbeats = pipes.hand_over(read_end)
    if boss._wakeup_read < 0:
        boss._wakeup_read, boss._wakeup_write = pipes.open()
    return write_end


def test_a_worker_is_hung_once_unheard_for_the_whole_timeout(
    clock: FakeClock, boss: Supervisor
) -> None:
    first, second = boss.workers
    running(first, 101), running(second, 102)
    first.heard(clock())
    second.heard(clock())
    clock.advance(TIMEOUT - 0.1)
    second.heard(clock())
    assert boss.hung() == []
    clock.advance(0.1)
    assert boss.hung() == [first]
    assert first.silent_seconds(clock()) == TIMEOUT


def test_a_starting_worker_is_not_judged_before_its_first_heartbeat(
    clock: FakeClock, boss: Supervisor
) -> None:
    for index, worker in enumerate(boss.workers):
        running(worker, 100 + index)
    clock.advance(1000 * TIMEOUT)  # importing, building its app, connecting to Redis
    assert boss.hung() == []
    assert boss.wait_seconds() is None  # nothing to wake up for


def test_the_supervisor_wakes_when_a_worker_would_become_hung(
    clock: FakeClock, boss: Supervisor
) -> None:
    first, second = boss.workers
    running(first, 101)
    first.heard(clock())
    clock.advance(3.0)
    assert boss.wait_seconds() == TIMEOUT - 3.0
    second.restart_at = clock() + 1.0  # a restart due sooner comes first
    assert boss.wait_seconds() == 1.0
    second.restart_at = None
    clock.advance(60.0)
    assert boss.wait_seconds() == 0.0


def test_a_timeout_of_0_never_judges(clock: FakeClock) -> None:
    boss = supervisor(clock, timeout=0)
    worker = boss.workers[0]
    running(worker, 101)
    worker.heard(clock())
    clock.advance(1e6)
    assert boss.hung() == []
    assert boss.wait_seconds() is None


def test_a_hung_worker_is_killed_once_logged_and_counted(
    clock: FakeClock, boss: Supervisor, pipes: Pipes, caplog: pytest.LogCaptureFixture
) -> None:
    worker = boss.workers[1]
    process = running(worker, 4242)
    listened(boss, worker, pipes)
    worker.heard(clock())
    clock.advance(TIMEOUT + 2.5)
    with caplog.at_level(logging.ERROR, logger="mudgate"):
        boss._replace_hung()
        clock.advance(10 * TIMEOUT)
        boss._replace_hung()  # judged once: it is dying, its sentinel says when it is gone
    assert process.signals == [signal.SIGKILL]
    assert boss.hung_workers_replaced == 1
    assert worker.heartbeats is None  # no longer listened to
    (record,) = caplog.records
    assert "worker 2 (pid 4242) was not heard from for 12.5 s" in record.getMessage()
    assert "1 hung workers replaced so far" in record.getMessage()
    fields = cast(Any, record)
    assert (fields.worker, fields.pid, fields.silent_seconds) == (2, 4242, 12.5)
    assert fields.hung_workers_replaced == 1


def test_a_heartbeat_waiting_in_the_pipe_is_heard_before_the_verdict(
    clock: FakeClock, boss: Supervisor, pipes: Pipes
) -> None:
    # The supervisor itself was held up past every worker's deadline; the worker that beat
    # meanwhile is heard (its byte waits in the pipe), the one that did not is hung.
    beating, silent = boss.workers
    beats: dict[int, int] = {}
    for index, worker in enumerate(boss.workers):
        running(worker, 101 + index)
        beats[worker.index] = listened(boss, worker, pipes)
        worker.heard(clock())
    clock.advance(TIMEOUT + 5.0)
    os.write(beats[beating.index], b".")
    assert boss.wait_seconds() == 0.0
    boss._wait()
    assert beating.heard_at == clock()
    assert boss.hung() == [silent]


def test_a_worker_whose_pipe_closes_is_no_longer_listened_to(
    boss: Supervisor, pipes: Pipes
) -> None:
    worker = boss.workers[0]
    running(worker, 101)
    write_end = listened(boss, worker, pipes)
    os.close(pipes.hand_over(write_end))  # the worker exited
    boss._wait()
    assert worker.heartbeats is None
    assert worker.heard_at is None


class UnforkableProcess:
    """A worker's process that cannot be started, as when fork fails (EAGAIN, ENOMEM)."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def start(self) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


class UnforkableContext:
    Process = UnforkableProcess


def test_no_end_of_a_heartbeat_pipe_outlives_a_worker_that_could_not_start(
    boss: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []

    def pipe() -> tuple[int, int]:
        ends = real_pipe()
        opened.extend(ends)
        return ends

    real_pipe = os.pipe
    monkeypatch.setattr(os, "pipe", pipe)
    monkeypatch.setattr(boss, "_context", UnforkableContext())
    worker = boss.workers[0]
    with pytest.raises(BlockingIOError):
        boss._start(worker)
    assert len(opened) == 2  # a heartbeat pipe was opened for it...
    for fd in opened:  # ... and both its ends closed
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    assert (worker.process, worker.heartbeats) == (None, None)
