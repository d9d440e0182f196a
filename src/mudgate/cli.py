"""The ``mudgate`` command: ``serve`` the gateway, mint a player ``token``, show the
``settings``, or ``soak`` a running server."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .auth import Authenticator, is_valid_player_id
from .gateway import standalone
from .server import serve, serve_workers
from .settings import Settings, SettingsError, load_settings, settings_table

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
    parser.add_argument("--version", action="version", version=f"mudgate {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (WebSocket /ws, SSE /events, POST /commands, and telnet)",
        description="Run the gateway until interrupted (Ctrl-C or SIGTERM close it gracefully).",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (default 54731)")
    serve.add_argument(
        "--telnet-port",
        type=int,
        metavar="PORT",
        help="also serve telnet for MUD clients (Mudlet, TinTin++, telnet) on this port "
        "(default: no telnet; `make run` uses 54732)",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML file of settings")
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the port, e.g. one per core (default 1); more than 1 needs "
        "MUDGATE_BACKPLANE, as every worker is a node of the Redis backplane",
    )
    serve.add_argument(
        "--game",
        metavar="MODULE:ATTR",
        help="run this mudgate.Game (e.g. examples.castle.game:game) in a process of its own: "
        "players stay connected while it restarts (SIGHUP starts a fresh one; see "
        "docs/embedding.md)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        default=None,
        help="with --game: start a fresh game process whenever a .py file of its package "
        "changes (development)",
    )
    serve.add_argument(
        "--game-link",
        metavar="ADDRESS",
        help="where the game attaches: a Unix socket's path or 127.0.0.1:PORT (default with "
        "--game: a private Unix socket); alone, wait for a game you start yourself "
        "(docs/game-link.md; needs MUDGATE_GAME_TOKEN)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default info)",
    )

    game = commands.add_parser(
        "game",
        help="run a game and attach it to a gateway's game link",
        description="Run the mudgate.Game named MODULE:ATTR in this process and attach it to "
        "the gateway listening at --link (what `mudgate serve --game` starts for you). The "
        "link's secret is read from MUDGATE_GAME_TOKEN. Exits when the gateway retires it.",
    )
    game.add_argument("spec", metavar="MODULE:ATTR", help="the game, e.g. mygame:game")
    game.add_argument(
        "--link", required=True, metavar="ADDRESS",
        help="the gateway's game link: a Unix socket's path or 127.0.0.1:PORT",
    )  # fmt: skip
    game.add_argument("--config", metavar="FILE", help="TOML file of settings")
    game.add_argument(
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
    soak = commands.add_parser(
        "soak",
        help="drive a running server with simulated players and report whether memory stays flat",
        description="Drive the server at --url with N simulated players (connecting, moving, "
        "talking, disconnecting, some vanishing without a close) for --duration, showing live "
        "connections, messages and the server's RSS. At the end it writes soak.md, soak.json "
        "and soak.png (RSS and connections over time) to --out, with the RSS trend, every "
        "structure before and after, the errors seen and a verdict: flat or growing (exit 1).",
    )
    soak.add_argument(
        "--url", default="http://127.0.0.1:54731", help="the server (default %(default)s)"
    )
    soak.add_argument(
        "--clients", type=int, default=100, help="simulated players (default %(default)s)"
    )
    soak.add_argument(
        "--duration", default="5m", help="how long: 90s, 15m, 2h, up to 7d (default %(default)s)"
    )
    soak.add_argument(
        "--churn-rate",
        type=float,
        default=None,
        help="sessions ending per second, all players together (default: clients / 30, so a "
        "session lasts 30 s on average; 0: nobody leaves)",
    )
    soak.add_argument(
        "--secret-key",
        help="the server's MUDGATE_SECRET_KEY, to sign players' tokens (default: that variable "
        "here; without it, guest tokens from POST /auth/guest, which are rate-limited)",
    )
    soak.add_argument("--out", help="report directory (default soak-<date-time>)")
    soak.add_argument(
        "--max-slope", type=float, default=10.0,
        help="MiB/h of steady growth after the warm-up that counts as growing (default 10)",
    )  # fmt: skip
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("mudgate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def _settings(config: str | None, **overrides: object) -> Settings:
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return load_settings(config, **given)
    except SettingsError as error:
        sys.exit(f"mudgate: invalid configuration\n{error}")


def _serve(args: argparse.Namespace) -> None:
    settings = _settings(
        args.config,
        host=args.host,
        port=args.port,
        telnet_port=args.telnet_port,
        workers=args.workers,
        game=args.game,
        game_reload=args.reload,
        game_link=args.game_link,
    )
    if settings.game_reload and settings.game is None:
        sys.exit("mudgate: --reload restarts the game started by --game: give --game too")
    if settings.workers > 1:
        serve_workers(standalone, settings, args.log_level)
    else:
        serve(*standalone(settings), args.log_level)


def _game(args: argparse.Namespace) -> None:
    # The game's side of the link loads only for this command.
    from .game.runner import run_game  # noqa: PLC0415
    from .logs import configure_logging  # noqa: PLC0415
    from .settings.game import link_address  # noqa: PLC0415

    settings = _settings(args.config)
    token = os.environ.get("MUDGATE_GAME_TOKEN")
    if not token:
        sys.exit("mudgate game: MUDGATE_GAME_TOKEN is not set: the gateway's game link secret")
    if isinstance(link_address(args.link), str) and not Path(args.link).exists():
        sys.exit(f"mudgate game: cannot reach the gateway's game link at {args.link}: no socket")
    configure_logging(args.log_level, settings.log_format)
    try:
        code = asyncio.run(run_game(args.spec, args.link, token, settings))
    except OSError as error:
        sys.exit(f"mudgate game: cannot reach the gateway's game link at {args.link}: {error}")
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


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


def _soak(args: argparse.Namespace) -> None:
    # The soak client (and the websockets client with it) loads only for this command.
    from .tools.soak import SoakConfig, SoakError, parse_duration, progress_bar, run_soak  # noqa: PLC0415
    from .tools.soak_report import write_report  # noqa: PLC0415

    try:
        duration = parse_duration(args.duration)
    except ValueError as error:
        sys.exit(f"mudgate soak: --duration: {error}")
    if args.clients < 1:
        sys.exit("mudgate soak: --clients must be at least 1")
    churn_rate = args.clients / 30 if args.churn_rate is None else args.churn_rate
    if churn_rate < 0:
        sys.exit("mudgate soak: --churn-rate cannot be negative")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    config = SoakConfig(
        url=args.url,
        clients=args.clients,
        duration_seconds=duration,
        churn_rate=churn_rate,
        out=Path(args.out or f"soak-{stamp}"),
        secret_key=args.secret_key or os.environ.get("MUDGATE_SECRET_KEY"),
        sample_seconds=max(1.0, min(30.0, duration / 300)),
        max_slope_mb_per_hour=args.max_slope,
    )
    try:
        report = asyncio.run(run_soak(config, progress_bar()))
    except SoakError as error:
        sys.exit(f"\nmudgate soak: {error}")
    except KeyboardInterrupt:
        sys.exit("\nmudgate soak: interrupted; no report written")
    written = write_report(report, config.out)
    print(f"\nverdict: {report.verdict}", *(f"  {reason}" for reason in report.reasons), sep="\n")
    for hint in report.hints:
        print(f"note: {hint}")
    print(
        f"RSS {report.growth_mb:+.2f} MiB after warm-up, trend {report.slope_mb_per_hour:+.2f} "
        f"MiB/h (r² {report.r_squared}); errors: {sum(report.errors.values())}"
    )
    print("report:", *(str(path) for path in written))
    sys.exit(1 if report.verdict == "growing" else 0)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    commands = {
        "serve": _serve,
        "game": _game,
        "token": _token,
        "settings": _show_settings,
        "soak": _soak,
    }
    commands[args.command](args)
