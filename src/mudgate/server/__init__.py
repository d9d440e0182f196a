"""What uvicorn runs below ASGI, owned by mudgate (DESIGN.md invariant 9).

uvicorn takes its HTTP and WebSocket protocol classes from its configuration; mudgate gives it
its own, so that what a client can make the process (or the kernel) hold is capped and counted
in mudgate's code: the time and bytes a request head may take, open TCP connections of every
kind, replies to a client that does not read, control frames, kernel buffers. ``serve`` runs a
gateway that way; ``create_server`` builds the same server without running it;
``serve_workers`` runs several such processes on one port.
"""

from .serve import MudgateServer, create_server, serve
from .workers import serve_workers

__all__ = ["MudgateServer", "create_server", "serve", "serve_workers"]
