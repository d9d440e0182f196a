"""Attacks on a real ``mudgate serve``: each test starts its own, with the settings it needs."""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .gateway import Gateway


@pytest.fixture(autouse=True, scope="session")
def _descriptors() -> None:
    """Room for the attackers' sockets in the test process itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start ``mudgate serve`` with settings: ``gateway(request_timeout=1)``."""
    started: list[Gateway] = []

    def start(
        nofile: int | None = None, cgroup_procs: Path | None = None, **settings: object
    ) -> Gateway:
        log = tmp_path / f"gateway-{len(started)}.log"
        running = Gateway(log, nofile, cgroup_procs, **settings).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
