"""Measuring the process's memory honestly (DESIGN.md section 8)."""

from .monitor import MemoryMonitor, MemorySample

__all__ = ["MemoryMonitor", "MemorySample"]
