"""mudgate: the real-time gateway for MUD-style game servers that never leaks memory."""

from .commands import CommandContext, CommandRegistry, builtin_commands
from .hub import Hub
from .protocol import CloseCode, ErrorCode, ProtocolError
from .settings import Settings
from .web.app import create_app

__all__ = [
    "CloseCode",
    "CommandContext",
    "CommandRegistry",
    "ErrorCode",
    "Hub",
    "ProtocolError",
    "Settings",
    "builtin_commands",
    "create_app",
]
