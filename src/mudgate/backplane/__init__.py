"""How hubs share rooms, channels, direct messages and presence: in one process, or through
Redis (``MUDGATE_BACKPLANE=redis://...``)."""

from __future__ import annotations

from ..settings import Settings
from .base import Backplane, BackplaneStats, Delivery, HealthProvider, Node, Presence
from .local import LocalBackplane

__all__ = [
    "Backplane",
    "BackplaneStats",
    "Delivery",
    "HealthProvider",
    "LocalBackplane",
    "Node",
    "Presence",
    "create_backplane",
]


def create_backplane(settings: Settings) -> Backplane:
    """The backplane ``settings`` ask for: Redis when ``backplane`` is set, else in-process."""
    if settings.backplane is None:
        return LocalBackplane()
    try:
        from .redis import RedisBackplane  # noqa: PLC0415 - redis-py is an optional extra
    except ImportError as error:  # pragma: no cover - depends on what is installed
        raise RuntimeError(
            "MUDGATE_BACKPLANE is a Redis URL but redis-py is not installed: "
            "pip install 'mudgate[redis]'"
        ) from error
    return RedisBackplane(settings)
