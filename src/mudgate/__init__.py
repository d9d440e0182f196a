"""mudgate: the real-time gateway for MUD-style game servers that never leaks memory."""

from .auth import AuthenticateHook, Credentials, TokenError, issue_token
from .commands import CommandContext, CommandRegistry, NoArgs, builtin_commands
from .hooks import Hooks
from .hub import Delivery, Hub
from .protocol import CloseCode, ErrorCode, ProtocolError
from .server import serve, serve_workers
from .settings import Settings
from .text import PlayerText, player_text
from .web.app import MudgateApp, create_app, mount

__all__ = [
    "AuthenticateHook",
    "CloseCode",
    "CommandContext",
    "CommandRegistry",
    "Credentials",
    "Delivery",
    "ErrorCode",
    "Hooks",
    "Hub",
    "MudgateApp",
    "NoArgs",
    "PlayerText",
    "ProtocolError",
    "Settings",
    "TokenError",
    "builtin_commands",
    "create_app",
    "issue_token",
    "mount",
    "player_text",
    "serve",
    "serve_workers",
]
