"""How hubs share rooms, channels and direct messages: in one process, or through Redis."""

from .base import Backplane, Deliver
from .local import LocalBackplane

__all__ = ["Backplane", "Deliver", "LocalBackplane"]
