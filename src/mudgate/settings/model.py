"""Every tunable of mudgate: limits, timeouts and addresses, with their defaults.

Values come, highest priority first, from keyword arguments, ``MUDGATE_*`` environment
variables, and the TOML file named by ``MUDGATE_CONFIG``. Invalid values fail at start-up with
a message naming the variable (see ``describe_errors``).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .game import GameProcess
from .gateway import Connections, PlayerRates, Serving, Sockets, Structures
from .operations import Cluster, History, Memory, Notifications
from .recovery import Recovery
from .telnet import Telnet

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "MUDGATE_"

# The TOML file named on the command line; it takes the place of MUDGATE_CONFIG.
named_config_file: ContextVar[Path | None] = ContextVar("mudgate_config_file", default=None)


# The groups are listed last to first: pydantic collects fields from the last base on, so
# MUDGATE_HOST comes first in `mudgate settings` and the README's table, as in gateway.py.
class Settings(
    Recovery,
    Telnet,
    GameProcess,
    Notifications,
    Cluster,
    History,
    Memory,
    Sockets,
    PlayerRates,
    Connections,
    Structures,
    Serving,
    BaseSettings,
):
    """mudgate's configuration. Each field is the environment variable ``MUDGATE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        config = named_config_file.get() or os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(config)),)
        return sources
