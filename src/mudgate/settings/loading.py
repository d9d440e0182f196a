"""Loading settings with errors that name the variable, and the table of every setting."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import SecretStr, ValidationError

from .model import ENV_PREFIX, Settings, named_config_file

__all__ = ["SettingsError", "describe_errors", "load_settings", "settings_table"]


class SettingsError(Exception):
    """Invalid configuration; the message names each offending variable."""


def describe_errors(error: ValidationError) -> str:
    """One line per invalid value, naming the environment variable an operator would set."""
    lines = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"])
        name = f"{ENV_PREFIX}{location.upper()}" if location else "configuration"
        lines.append(f"{name}: {detail['msg']}")
    return "\n".join(lines)


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment (and ``config_file``), raising SettingsError."""
    named = config_file if config_file is not None else os.environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(named) if named else None
    if path is not None and not path.is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file: {path}")
    token = named_config_file.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
    finally:
        named_config_file.reset(token)


def _format_value(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(set)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value)


def settings_table(settings: Settings | None = None) -> str:
    """Every setting as a Markdown table: the README's configuration table.

    With ``settings``, the values in force (secrets shown only as set or unset) stand in the
    default column's place.
    """
    heading = "value" if settings is not None else "default"
    rows = [
        f"| environment variable | {heading} | meaning |",
        "|---|---|---|",
        f"| `{ENV_PREFIX}CONFIG` | unset | TOML file of settings (keys are the lower-case "
        "names without the prefix); environment variables take precedence. |",
    ]
    for name, field in Settings.model_fields.items():
        if settings is not None:
            value = _format_value(getattr(settings, name))
        elif field.default_factory is socket.gethostname:
            value = "host name"
        else:
            value = _format_value(field.get_default(call_default_factory=True))
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{value}` | {field.description} |")
    return "\n".join(rows)
