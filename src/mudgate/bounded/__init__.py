"""The memory-safe containers every structure in mudgate is built from.

Each container has a capacity, evicts its oldest entry when an insert would pass it, and (where
entries go stale) a TTL. Expiry walks entries in expiry order and stops at the first live one,
so a sweep costs O(expired), never O(size). Every container counts what it evicted and expired
so monitoring can show it.
"""

from __future__ import annotations

from .base import ContainerStats
from .limiters import InFlight, SlidingWindowLimiter, TokenBuckets, leak
from .mailboxes import Mailboxes, Refused
from .ttl import BoundedQueue, TTLMap

__all__ = [
    "BoundedQueue",
    "ContainerStats",
    "InFlight",
    "Mailboxes",
    "Refused",
    "SlidingWindowLimiter",
    "TTLMap",
    "TokenBuckets",
    "leak",
]
