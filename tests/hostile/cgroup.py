"""A memory cgroup of the test's own, to start ``mudgate serve`` under a real limit.

cgroup v2 where its ``memory`` controller can be enabled for a child of the test's cgroup,
else v1's ``memory`` hierarchy (this project's machines); ``None`` (and why) where neither
can be made: not root, no memory controller, or a read-only cgroup file system.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_names = itertools.count()


class MemoryCgroup:
    """A child cgroup with a memory limit; ``procs`` is the file a process writes its pid
    into to join it."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def make(cls, proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[MemoryCgroup | None, str]:
        """A new cgroup, or None and the reason none can be made here."""
        if os.geteuid() != 0:
            return None, "making a memory cgroup needs root"
        lines = proc_cgroup.read_text().splitlines()
        name = f"mudgate-test-{os.getpid()}-{next(_names)}"
        reasons = []
        v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
        if v2 is not None and "memory" in _read(ROOT / "cgroup.controllers").split():
            parent = ROOT / v2.lstrip("/")
            try:
                if "memory" not in _read(parent / "cgroup.subtree_control").split():
                    (parent / "cgroup.subtree_control").write_text("+memory")
                (parent / name).mkdir()
                return cls(parent / name, 2), ""
            except OSError as error:
                reasons.append(f"v2 at {parent}: {error}")
        v1 = next(
            (
                m.group(1)
                for line in lines
                if (m := re.match(r"\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)", line))
            ),
            None,
        )
        if v1 is not None and (ROOT / "memory").is_dir():
            parent = ROOT / "memory" / v1.lstrip("/")
            try:
                (parent / name).mkdir()
                return cls(parent / name, 1), ""
            except OSError as error:
                reasons.append(f"v1 at {parent}: {error}")
        return None, "; ".join(reasons) or "no cgroup memory controller on this machine"

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def limit(self, limit_bytes: int) -> None:
        """Memory and swap together at most ``limit_bytes``: a process over it is OOM-killed,
        not swapped out."""
        if self.version == 2:
            (self.path / "memory.swap.max").write_text("0")
            (self.path / "memory.max").write_text(str(limit_bytes))
            return
        # v1 wants memory.limit <= memsw.limit at every step: the order depends on the way.
        memory, both = (
            self.path / "memory.limit_in_bytes",
            self.path / "memory.memsw.limit_in_bytes",
        )
        steps = [(memory, limit_bytes), (both, limit_bytes)]
        if not both.exists():
            steps = steps[:1]  # no swap accounting: no swap either
        elif limit_bytes > int(_read(memory) or 0):
            steps.reverse()
        for path, value in steps:
            path.write_text(str(value))

    def usage_bytes(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int(_read(self.path / name))

    def limit_hits(self) -> int:
        """How often usage reached the limit (and the kernel had to reclaim to go on)."""
        if self.version == 2:
            match = re.search(r"^max (\d+)$", _read(self.path / "memory.events"), re.M)
            return int(match.group(1)) if match else 0
        return int(_read(self.path / "memory.failcnt") or 0)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for this cgroup's limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        match = re.search(r"^oom_kill (\d+)$", _read(self.path / name), re.M)
        return int(match.group(1)) if match else 0

    def remove(self, timeout: float = 10.0) -> None:
        """Kill what is still inside, and remove it once they are gone."""
        deadline = time.monotonic() + timeout
        while pids := [int(pid) for pid in _read(self.procs).split()]:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
