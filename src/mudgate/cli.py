"""The ``mudgate`` command: ``serve`` the gateway, or mint a player ``token``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .auth import Authenticator, is_valid_player_id
from .settings import Settings, SettingsError, load_settings, settings_table
from .web.app import create_app, serve

__all__ = ["main"]

DESCRIPTION = """\
mudgate: the real-time gateway for MUD-style game servers.

Every setting is also an environment variable (MUDGATE_PORT, MUDGATE_SECRET_KEY, ...) or a key
in the TOML file named by --config or MUDGATE_CONFIG; see the README's configuration table.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mudgate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (WebSocket /ws, SSE /events, POST /commands)",
        description="Run the gateway until interrupted (Ctrl-C or SIGTERM close it gracefully).",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (default 54731)")
    serve.add_argument("--config", metavar="FILE", help="TOML file of settings")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default info)",
    )

    token = commands.add_parser(
        "token",
        help="print a signed token for a player",
        description="Print a player token signed with MUDGATE_SECRET_KEY, for ?token= on /ws "
        "and /events or a bearer token on POST /commands. The server must use the same key.",
    )
    token.add_argument(
        "player", metavar="PLAYER", help="player id: letters, digits, _ . - (max 32)"
    )
    token.add_argument("--config", metavar="FILE", help="TOML file of settings")

    show = commands.add_parser(
        "settings",
        help="show every setting with the value in force",
        description="Print every setting, its environment variable and the value the server "
        "would use here (secrets are shown only as set or unset). Invalid values are reported.",
    )
    show.add_argument("--config", metavar="FILE", help="TOML file of settings")
    show.add_argument(
        "--defaults", action="store_true", help="show the defaults instead (the README's table)"
    )
    return parser


def _settings(config: str | None, **overrides: object) -> Settings:
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return load_settings(config, **given)
    except SettingsError as error:
        sys.exit(f"mudgate: invalid configuration\n{error}")


def _serve(args: argparse.Namespace) -> None:
    settings = _settings(args.config, host=args.host, port=args.port)
    serve(create_app(settings), settings, args.log_level)


def _token(args: argparse.Namespace) -> None:
    settings = _settings(args.config)
    if settings.secret_key is None:
        sys.exit(
            "mudgate: MUDGATE_SECRET_KEY is not set; set it (32+ characters) here and for the "
            "server, so the server accepts the token"
        )
    if not is_valid_player_id(args.player):
        sys.exit(f"mudgate: invalid player id {args.player!r}: letters, digits, _ . - (max 32)")
    authenticator = Authenticator(settings.secret_key.get_secret_value(), settings.token_ttl)
    print(authenticator.issue(args.player))


def _show_settings(args: argparse.Namespace) -> None:
    print(settings_table(None if args.defaults else _settings(args.config)))


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    {"serve": _serve, "token": _token, "settings": _show_settings}[args.command](args)
