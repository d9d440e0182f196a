"""Settings: defaults, environment, TOML, clear errors, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mudgate.gateway import Gateway
from mudgate.server import serve
from mudgate.settings import Settings, SettingsError, load_settings, settings_table

README = Path(__file__).parent.parent / "README.md"


def test_defaults_follow_the_design() -> None:
    settings = Settings()
    assert settings.port == 54731
    assert settings.max_message_bytes == 64 * 1024
    assert settings.outbox_max_bytes == 256 * 1024
    assert settings.max_subscriptions_per_player == 128
    assert settings.pending_message_ttl == settings.connection_attempt_ttl == 3600
    assert settings.max_pending_messages == settings.max_rate_limit_entries == 1000
    assert settings.max_connection_age == 3600
    assert settings.ws_per_message_deflate is False


def test_environment_variables_set_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUDGATE_MAX_CONNECTIONS", "5")
    monkeypatch.setenv("MUDGATE_ALLOW_GUESTS", "false")
    settings = load_settings()
    assert settings.max_connections == 5
    assert settings.allow_guests is False


def test_a_toml_file_sets_values_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mudgate.toml"
    config.write_text('port = 1234\nmax_players = 50\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("MUDGATE_MAX_PLAYERS", "60")
    settings = load_settings(config)
    assert (settings.port, settings.max_players, settings.host) == (1234, 60, "0.0.0.0")
    monkeypatch.setenv("MUDGATE_CONFIG", str(config))
    assert load_settings().port == 1234


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MUDGATE_MAX_CONNECTIONS", "0", "MUDGATE_MAX_CONNECTIONS: Input should be greater than 0"),
        ("MUDGATE_PORT", "70000", "MUDGATE_PORT: Input should be less than or equal to 65535"),
        ("MUDGATE_PING_INTERVAL", "soon", "MUDGATE_PING_INTERVAL: Input should be a valid number"),
        ("MUDGATE_IDLE_TIMEOUT", "-1", "MUDGATE_IDLE_TIMEOUT: Input should be greater than or"),
        ("MUDGATE_SECRET_KEY", "short", "MUDGATE_SECRET_KEY: Value error, must be at least 32"),
        ("MUDGATE_ADMIN_TOKEN", "x", "MUDGATE_ADMIN_TOKEN: Value error, must be at least 16"),
        (
            "MUDGATE_FORWARDED_ALLOW_IPS",
            "10.0.0.1,proxy",
            "MUDGATE_FORWARDED_ALLOW_IPS: Value error, not an address or network: 'proxy'",
        ),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


def test_unknown_keys_in_the_toml_file_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "mudgate.toml"
    config.write_text("max_conections = 5\n")
    with pytest.raises(SettingsError, match="MUDGATE_MAX_CONECTIONS: Extra inputs"):
        load_settings(config)


def test_a_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
    monkeypatch.setenv("MUDGATE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="MUDGATE_CONFIG: no such file"):
        load_settings()


def test_the_readme_table_matches_the_settings() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start.*?-->\n(.*?)\n<!-- settings-table:end -->", text, re.S
    )
    assert match, "README.md lost its settings-table markers"
    assert match.group(1) == settings_table(), (
        "README.md's configuration table is out of date: run `make readme`"
    )


def test_every_setting_is_in_the_table() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert f"`MUDGATE_{name.upper()}`" in table


def test_the_table_of_values_in_force_hides_secrets() -> None:
    table = settings_table(Settings(secret_key="s" * 40, max_players=7))
    assert "s" * 40 not in table
    assert "| `MUDGATE_SECRET_KEY` | `(set)` |" in table
    assert "| `MUDGATE_MAX_PLAYERS` | `7` |" in table


@pytest.mark.parametrize("variable", ["MUDGATE_ADMIN_TOKEN", "MUDGATE_SECRET_KEY"])
def test_an_empty_secret_is_an_unset_one(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    # An empty admin token would lock the admin out, with no random one logged to use instead.
    monkeypatch.setenv(variable, "")
    settings = load_settings()
    assert settings.admin_token is None
    assert settings.secret_key is None


def test_trusted_proxies_are_a_list_of_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().forwarded_allow_ips == []  # nobody is trusted by default
    monkeypatch.setenv("MUDGATE_FORWARDED_ALLOW_IPS", "127.0.0.1, 10.0.0.0/8,*")
    assert load_settings().forwarded_allow_ips == ["127.0.0.1", "10.0.0.0/8", "*"]


def test_several_workers_need_a_backplane_and_the_message_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match=r"MUDGATE_BACKPLANE=redis://") as raised:
        load_settings(None, workers=2)
    assert "MUDGATE_WORKERS=1" in str(raised.value)
    settings = load_settings(None, workers=2, backplane="redis://127.0.0.1:6379/0")
    assert settings.workers == 2


def test_serve_runs_one_process_and_points_to_serve_workers_for_more() -> None:
    settings = load_settings(None, workers=2, backplane="redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="serve_workers"):
        serve(object(), Gateway(settings))


def test_the_game_link_is_loopback_or_a_socket_authenticated_and_one_per_gateway() -> None:
    with pytest.raises(SettingsError, match="is not MODULE:ATTR"):
        load_settings(None, game="castle")
    with pytest.raises(SettingsError, match="loopback only"):
        load_settings(None, game="castle:game", game_link="10.0.0.5:7000")
    with pytest.raises(SettingsError, match="needs MUDGATE_GAME_TOKEN"):
        load_settings(None, game_link="/run/mudgate/game.sock")
    with pytest.raises(SettingsError, match="every worker would listen at the same address"):
        load_settings(
            None, game="castle:game", game_link="[::1]:7000", workers=2, backplane="redis://r:1/0"
        )
    settings = load_settings(None, game_link="localhost:7000", game_token="secret")
    assert settings.game is None
