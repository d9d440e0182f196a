"""MemoryMonitor against system memory, fake cgroup v1 and v2 trees, and a configured limit."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from mudgate.memory.monitor import MIB, MemoryMonitor, read_cgroup

from ..conftest import FakeClock, make_settings

GIB = 1024 * MIB


class FakeProcess:
    """psutil.Process with a chosen RSS, or one that fails."""

    def __init__(self, rss: int = 512 * MIB) -> None:
        self.rss = rss
        self.failing = False

    def memory_info(self) -> Any:
        if self.failing:
            raise psutil.AccessDenied(pid=1)
        return SimpleNamespace(rss=self.rss, vms=2 * self.rss)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v2(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup v2 tree: the process in /app, limited to 2 GiB, with 1.5 GiB in use."""
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory\n")
    write(root / "app" / "memory.max", f"{2 * GIB}\n")
    write(root / "app" / "memory.high", "max\n")
    write(root / "app" / "memory.current", f"{1536 * MIB}\n")
    write(root / "app" / "memory.stat", f"anon 1\ninactive_file {512 * MIB}\nfile 3\n")
    proc = tmp_path / "proc-cgroup"
    write(proc, "0::/app\n")
    return root, proc


@pytest.fixture
def v1(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / "memory" / "job" / "memory.limit_in_bytes", f"{4 * GIB}\n")
    write(root / "memory" / "job" / "memory.usage_in_bytes", f"{1 * GIB}\n")
    write(
        root / "memory" / "job" / "memory.stat",
        f"hierarchical_memory_limit {3 * GIB}\ntotal_inactive_file {256 * MIB}\n",
    )
    write(root / "unified" / "cgroup.procs", "")
    proc = tmp_path / "proc-cgroup"
    write(proc, "5:cpu:/\n4:memory:/job\n0::/\n")
    return root, proc


def monitor(
    root: Path, proc: Path, process: FakeProcess | None = None, **settings: Any
) -> MemoryMonitor:
    return MemoryMonitor(
        make_settings(cgroup_root=root, **settings),
        proc_cgroup=proc,
        process=process or FakeProcess(),  # type: ignore[arg-type]
        clock=FakeClock(),
    )


def test_without_a_cgroup_percent_is_against_physical_memory(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/\n")
    sample = monitor(tmp_path / "none", tmp_path / "proc").read()
    total = psutil.virtual_memory().total
    assert (sample.limit_source, sample.limit_bytes, sample.total_bytes) == (
        "physical",
        total,
        total,
    )
    assert sample.percent == round(100 * 512 * MIB / total, 2)
    assert sample.working_set_bytes is None


def test_a_cgroup_v2_limit_applies_with_its_working_set(v2: tuple[Path, Path]) -> None:
    sample = monitor(*v2).read()
    assert (sample.limit_source, sample.limit_bytes) == ("cgroup-v2", 2 * GIB)
    assert sample.working_set_bytes == 1024 * MIB  # current - inactive_file
    # The working set (1 GiB) is larger than RSS (512 MiB): percent uses it.
    assert sample.percent == 50.0
    assert sample.available_bytes == 1024 * MIB


def test_the_tightest_ancestor_limit_applies(v2: tuple[Path, Path]) -> None:
    root, proc = v2
    write(root / "app" / "memory.max", "max\n")
    write(root / "app" / "svc" / "memory.max", "max\n")
    write(root / "app" / "memory.high", f"{GIB}\n")
    write(root / "memory.max", f"{3 * GIB}\n")
    write(proc, "0::/app/svc\n")
    cgroup = read_cgroup(root, proc)
    assert cgroup is not None
    assert (cgroup.version, cgroup.limit_bytes, cgroup.high_bytes) == (2, 3 * GIB, GIB)


def test_a_cgroup_v1_limit_is_the_smaller_of_its_two(v1: tuple[Path, Path]) -> None:
    sample = monitor(*v1).read()
    assert (sample.limit_source, sample.limit_bytes) == ("cgroup-v1", 3 * GIB)
    assert sample.working_set_bytes == 768 * MIB


def test_an_unlimited_cgroup_v1_means_physical_memory(v1: tuple[Path, Path]) -> None:
    root, proc = v1
    unlimited = "9223372036854771712"  # what v1 writes for "no limit" (this machine's case)
    write(root / "memory" / "job" / "memory.limit_in_bytes", unlimited)
    write(root / "memory" / "job" / "memory.stat", f"hierarchical_memory_limit {unlimited}\n")
    assert monitor(root, proc).read().limit_source == "physical"


def test_a_container_sees_its_cgroup_at_the_mount_root(v1: tuple[Path, Path]) -> None:
    root, proc = v1
    write(proc, "4:memory:/host/path/not/mounted\n")
    write(root / "memory" / "memory.limit_in_bytes", f"{GIB}\n")
    assert monitor(root, proc).read().limit_bytes == GIB


def test_a_configured_limit_applies_when_smaller(v2: tuple[Path, Path]) -> None:
    sample = monitor(*v2, memory_limit_mb=1024).read()
    assert (sample.limit_source, sample.limit_bytes) == ("configured", GIB)
    assert sample.percent == 100.0


def test_this_machines_real_cgroup_is_read_without_error() -> None:
    sample = MemoryMonitor(make_settings()).read()
    assert sample.error is None
    assert 0 < sample.limit_bytes <= sample.total_bytes
    assert 0 < sample.percent < 100


def test_limits_are_read_again_after_the_refresh_interval(v2: tuple[Path, Path]) -> None:
    root, proc = v2
    clock = FakeClock()
    watcher = MemoryMonitor(
        make_settings(cgroup_root=root, cgroup_refresh_interval=60),
        proc_cgroup=proc,
        process=FakeProcess(),  # type: ignore[arg-type]
        clock=clock,
    )
    assert watcher.read().limit_bytes == 2 * GIB
    write(root / "app" / "memory.max", f"{4 * GIB}\n")
    write(root / "app" / "memory.current", f"{2048 * MIB}\n")
    sample = watcher.read()
    assert sample.limit_bytes == 2 * GIB  # cached
    assert sample.working_set_bytes == 1536 * MIB  # but usage is fresh
    clock.advance(60)
    assert watcher.read().limit_bytes == 4 * GIB


def test_a_failed_read_is_reported_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    process = FakeProcess()
    watcher = monitor(tmp_path, tmp_path / "missing", process)
    good = watcher.read()
    process.failing = True
    with caplog.at_level(logging.ERROR, "mudgate.memory"):
        failed = [watcher.read() for _ in range(3)]
    assert all(sample.error and "AccessDenied" in sample.error for sample in failed)
    assert failed[0].rss_bytes == good.rss_bytes  # the last good reading, marked failed
    assert len(caplog.records) == 1
    process.failing = False
    assert watcher.read().error is None
    assert (watcher.reads, watcher.failures) == (5, 3)
