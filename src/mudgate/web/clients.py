"""Who a request or a connection comes from, as every endpoint names it (rate limits, logs)."""

from __future__ import annotations

from starlette.types import Scope

__all__ = ["remote_address"]


def remote_address(scope: Scope) -> str:
    """The client's address, as the server (or a trusted proxy's header) gives it;
    ``"unknown"`` where the server gives none."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
