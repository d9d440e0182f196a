"""The command line: help, tokens, settings, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mudgate.auth import Authenticator
from mudgate.cli import main

from .conftest import SECRET_KEY


def test_help_explains_each_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "token", "settings"):
        assert command in out
    assert "MUDGATE_" in out


def test_token_prints_a_token_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUDGATE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("MUDGATE_TOKEN_TTL", "60")  # the server's, which the token must fit
    main(["token", "alice"])
    token = capsys.readouterr().out.strip()
    assert Authenticator(SECRET_KEY, 60).verify(token).player_id == "alice"


def test_token_needs_the_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUDGATE_SECRET_KEY", raising=False)
    with pytest.raises(SystemExit, match="MUDGATE_SECRET_KEY is not set"):
        main(["token", "alice"])


def test_token_refuses_a_bad_player_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUDGATE_SECRET_KEY", SECRET_KEY)
    with pytest.raises(SystemExit, match="invalid player id"):
        main(["token", "bad name!"])


def test_invalid_configuration_stops_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MUDGATE_MAX_PLAYERS", "many")
    with pytest.raises(SystemExit, match="MUDGATE_MAX_PLAYERS: Input should be a valid integer"):
        main(["settings"])


def test_settings_shows_the_values_in_force(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUDGATE_MAX_PLAYERS", "42")
    main(["settings"])
    assert "| `MUDGATE_MAX_PLAYERS` | `42` |" in capsys.readouterr().out


def test_the_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mudgate", "settings", "--defaults"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "MUDGATE_PORT" in result.stdout


def test_serve_refuses_invalid_configuration_before_binding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MUDGATE_PORT", "-1")
    with pytest.raises(SystemExit, match="MUDGATE_PORT"):
        main(["serve"])


def test_the_command_does_not_load_the_soak_client() -> None:
    # `mudgate serve` imports mudgate.cli: the soak client, and the websockets client it is
    # built on, load only when `mudgate soak` runs.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mudgate.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('mudgate.tools', "
            "'websockets.asyncio.client'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_serve_explains_the_game_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--game MODULE:ATTR", "--reload", "--game-link ADDRESS"):
        assert option in out


def test_the_game_options_are_checked_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit, match="--reload restarts the game started by --game"):
        main(["serve", "--reload"])
    with pytest.raises(SystemExit, match="is not MODULE:ATTR"):
        main(["serve", "--game", "castle"])
    with pytest.raises(SystemExit, match="loopback only"):
        main(["serve", "--game-link", "0.0.0.0:7000"])
    with pytest.raises(SystemExit, match="needs MUDGATE_GAME_TOKEN"):
        main(["serve", "--game-link", "127.0.0.1:7000"])


def test_a_game_needs_the_links_secret_and_a_reachable_gateway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("MUDGATE_GAME_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="MUDGATE_GAME_TOKEN is not set"):
        main(["game", "examples.castle.game:game", "--link", "/nowhere/game.sock"])
    monkeypatch.setenv("MUDGATE_GAME_TOKEN", "secret")
    with pytest.raises(SystemExit, match="cannot reach the gateway's game link"):
        main(["game", "examples.castle.game:game", "--link", "/nowhere/game.sock"])
