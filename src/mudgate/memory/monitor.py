"""MemoryMonitor: one MemorySample per read, measured against the limit that really applies.

psutil's percentages are relative to the host (psutil issue #2100): inside a 2 GiB container on
a 256 GiB host they never reach 80 %. So the effective limit is the smallest of the cgroup's
limit (v2 ``memory.max`` up the hierarchy, v1 ``memory.limit_in_bytes`` and the hierarchical
limit), ``memory_limit_mb`` and physical memory, and under a cgroup limit usage is the larger of
RSS and the cgroup's working set, which counts the kernel's socket buffers that RSS misses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..settings import Settings

__all__ = ["CgroupLimit", "MemoryMonitor", "MemorySample", "read_cgroup"]

logger = logging.getLogger("mudgate.memory")

MIB = 1024 * 1024
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class CgroupLimit:
    """What the process's cgroup says: its limit, throttle point and working set, in bytes."""

    version: int
    limit_bytes: int | None
    high_bytes: int | None
    working_set_bytes: int | None


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of the process's memory, in bytes, with the limit it is measured against."""

    rss_bytes: int
    vms_bytes: int
    available_bytes: int
    total_bytes: int
    limit_bytes: int
    limit_source: str
    percent: float
    working_set_bytes: int | None = None
    cgroup_high_bytes: int | None = None
    taken_at: float = 0.0
    error: str | None = None

    @property
    def used_bytes(self) -> int:
        """What percent is computed from: RSS, or the cgroup working set when larger."""
        return max(self.rss_bytes, self.working_set_bytes or 0)


def _read_int(path: Path) -> int | None:
    """An integer file of the cgroup tree; None for "max", a missing file or no limit."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return None if value >= _V1_UNLIMITED else value


def _tighter(a: int | None, b: int | None) -> int | None:
    return min((value for value in (a, b) if value is not None), default=None)


def _read_stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    stat = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            stat[name] = int(value)
    return stat


def _own_cgroup(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in the v1 memory hierarchy."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _directory(root: Path, path: str) -> Path:
    """The cgroup's directory; a container sees its own cgroup at the mount's root."""
    candidate = root / path.lstrip("/")
    return candidate if candidate.is_dir() else root


def read_cgroup(root: Path, proc_cgroup: Path = Path("/proc/self/cgroup")) -> CgroupLimit | None:
    """Read the memory limit that applies to this process; None outside any memory cgroup."""
    v2_path, v1_path = _own_cgroup(proc_cgroup)
    if v1_path is not None and (root / "memory").is_dir():
        leaf = _directory(root / "memory", v1_path)
        stat = _read_stat(leaf / "memory.stat")
        limits = [
            limit
            for limit in (
                _read_int(leaf / "memory.limit_in_bytes"),
                stat.get("hierarchical_memory_limit"),
            )
            if limit is not None and limit < _V1_UNLIMITED
        ]
        usage = _read_int(leaf / "memory.usage_in_bytes")
        working_set = None if usage is None else max(0, usage - stat.get("total_inactive_file", 0))
        return CgroupLimit(1, min(limits, default=None), None, working_set)
    if v2_path is not None and (root / "cgroup.controllers").exists():
        leaf = _directory(root, v2_path)
        # The tightest limit anywhere between the process's cgroup and the root applies.
        limit = high = None
        directory = leaf
        while True:
            limit = _tighter(limit, _read_int(directory / "memory.max"))
            high = _tighter(high, _read_int(directory / "memory.high"))
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
        current_usage = _read_int(leaf / "memory.current")
        inactive = _read_stat(leaf / "memory.stat").get("inactive_file", 0)
        working_set = None if current_usage is None else max(0, current_usage - inactive)
        return CgroupLimit(2, limit, high, working_set)
    return None


class MemoryMonitor:
    """Reads the process's memory against its effective limit; never raises.

    The cgroup limit is re-read every ``cgroup_refresh_interval`` (limits change at run time);
    the working set on every read, since it moves with usage. A failed read is logged once
    and returned as a sample with ``error`` set.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        proc_cgroup: Path = Path("/proc/self/cgroup"),
        process: psutil.Process | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._proc_cgroup = proc_cgroup
        self._process = process or psutil.Process()
        self._cgroup: CgroupLimit | None = None
        self._cgroup_read_at: float | None = None
        self._failing = False
        self.last: MemorySample | None = None
        # The first good reading: the process before any player (the budget's first line).
        self.first: MemorySample | None = None
        self.reads = 0
        self.failures = 0

    def _cgroup_now(self, now: float) -> CgroupLimit | None:
        refresh = self.settings.cgroup_refresh_interval
        if self._cgroup_read_at is None or now - self._cgroup_read_at >= refresh:
            self._cgroup = read_cgroup(self.settings.cgroup_root, self._proc_cgroup)
            self._cgroup_read_at = now
            return self._cgroup
        if self._cgroup is not None and self._cgroup.limit_bytes is not None:
            # The limit is cached; the working set is not.
            fresh = read_cgroup(self.settings.cgroup_root, self._proc_cgroup)
            working_set = fresh.working_set_bytes if fresh else None
            return CgroupLimit(
                self._cgroup.version,
                self._cgroup.limit_bytes,
                self._cgroup.high_bytes,
                working_set,
            )
        return self._cgroup

    def read(self, *, record: bool = True) -> MemorySample:
        """Read memory now. Unless ``record`` is False (a look that changes nothing, for a
        GET), the reading becomes ``last`` and failures are counted and logged."""
        now = self._clock()
        if not record:
            try:
                return self._read(now)
            except (OSError, psutil.Error, ValueError) as error:
                return self._failed(now, error)
        self.reads += 1
        try:
            sample = self._read(now)
        except (OSError, psutil.Error, ValueError) as error:
            self.failures += 1
            if not self._failing:
                logger.error("reading memory failed: %r (logged once until it recovers)", error)
                self._failing = True
            sample = self._failed(now, error)
        else:
            if self._failing:
                logger.info("reading memory works again")
                self._failing = False
            if self.first is None:
                self.first = sample
        self.last = sample
        return sample

    def _failed(self, now: float, error: Exception) -> MemorySample:
        """The last good reading's figures, marked with why this one failed."""
        previous = self.last
        return MemorySample(
            rss_bytes=previous.rss_bytes if previous else 0,
            vms_bytes=previous.vms_bytes if previous else 0,
            available_bytes=previous.available_bytes if previous else 0,
            total_bytes=previous.total_bytes if previous else 0,
            limit_bytes=previous.limit_bytes if previous else 0,
            limit_source=previous.limit_source if previous else "unknown",
            percent=previous.percent if previous else 0.0,
            taken_at=now,
            error=repr(error),
        )

    def _read(self, now: float) -> MemorySample:
        info = self._process.memory_info()
        system = psutil.virtual_memory()
        candidates: list[tuple[int, str]] = [(system.total, "physical")]
        if self.settings.memory_limit_mb is not None:
            candidates.append((int(self.settings.memory_limit_mb * MIB), "configured"))
        cgroup = self._cgroup_now(now)
        working_set = None
        if cgroup is not None and cgroup.limit_bytes is not None:
            candidates.append((cgroup.limit_bytes, f"cgroup-v{cgroup.version}"))
            working_set = cgroup.working_set_bytes
        limit, source = min(candidates, key=lambda candidate: candidate[0])
        used = max(info.rss, working_set or 0)
        available = min(system.available, max(0, limit - used))
        return MemorySample(
            rss_bytes=info.rss,
            vms_bytes=info.vms,
            available_bytes=available,
            total_bytes=system.total,
            limit_bytes=limit,
            limit_source=source,
            percent=round(100.0 * used / limit, 2),
            working_set_bytes=working_set,
            cgroup_high_bytes=cgroup.high_bytes if cgroup else None,
            taken_at=now,
        )
