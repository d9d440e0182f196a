"""The memory-safe containers every structure in mudgate is built from.

Each container has a capacity, evicts its oldest entry when an insert would pass it, and (where
entries go stale) a TTL. Expiry walks entries in expiry order and stops at the first live one,
so a sweep costs O(expired), never O(size). Every container counts what it evicted and expired
so monitoring can show it.
"""

from __future__ import annotations

from .base import ContainerStats, Expiring
from .limiters import InFlight, LeakyBucket, SlidingWindowLimiter, TokenBuckets
from .mailboxes import Mailboxes, Refused
from .ttl import BoundedQueue, TTLMap

__all__ = [
    "BoundedQueue",
    "ContainerStats",
    "Expiring",
    "InFlight",
    "LeakyBucket",
    "Mailboxes",
    "Refused",
    "SlidingWindowLimiter",
    "TTLMap",
    "TokenBuckets",
]
