"""mudgate: the real-time gateway for MUD-style game servers that never leaks memory.

The names below are imported on first use (PEP 562), so ``import mudgate.client`` (a bot, a
load test) loads neither the server nor FastAPI, and ``mudgate serve`` pays only for what it
runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name, and the module it lives in.
_EXPORTS = {
    "AuthenticateHook": ".auth",
    "Credentials": ".auth",
    "TokenError": ".auth",
    "issue_token": ".auth",
    "CommandContext": ".commands",
    "CommandRegistry": ".commands",
    "NoArgs": ".commands",
    "builtin_commands": ".commands",
    "Count": ".fields",
    "Name": ".fields",
    "Game": ".game",
    "Gateway": ".gateway",
    "create_app": ".gateway",
    "mount": ".gateway",
    "standalone": ".gateway",
    "Hooks": ".hooks",
    "Delivery": ".hub",
    "Hub": ".hub",
    "CloseCode": ".protocol",
    "CommandError": ".protocol",
    "ErrorCode": ".protocol",
    "PlayerId": ".protocol",
    "Renderers": ".render",
    "serve": ".server",
    "serve_workers": ".server",
    "Settings": ".settings",
    "PlayerText": ".text",
    "Text": ".text",
    "player_text": ".text",
    "MudgateApp": ".web.app",
}

__all__ = [
    "AuthenticateHook",
    "CloseCode",
    "CommandContext",
    "CommandError",
    "CommandRegistry",
    "Count",
    "Credentials",
    "Delivery",
    "ErrorCode",
    "Game",
    "Gateway",
    "Hooks",
    "Hub",
    "MudgateApp",
    "Name",
    "NoArgs",
    "PlayerId",
    "PlayerText",
    "Renderers",
    "Settings",
    "Text",
    "TokenError",
    "builtin_commands",
    "create_app",
    "issue_token",
    "mount",
    "player_text",
    "serve",
    "serve_workers",
    "standalone",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mudgate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .auth import AuthenticateHook, Credentials, TokenError, issue_token
    from .commands import CommandContext, CommandRegistry, NoArgs, builtin_commands
    from .fields import Count, Name
    from .game import Game
    from .gateway import Gateway, create_app, mount, standalone
    from .hooks import Hooks
    from .hub import Delivery, Hub
    from .protocol import CloseCode, CommandError, ErrorCode, PlayerId
    from .render import Renderers
    from .server import serve, serve_workers
    from .settings import Settings
    from .text import PlayerText, Text, player_text
    from .web.app import MudgateApp
