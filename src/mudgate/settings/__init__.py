"""Every tunable of mudgate: ``Settings`` (model.py, its fields in groups in gateway.py and
operations.py), how it is loaded and how it is shown (loading.py)."""

from .loading import SettingsError, describe_errors, load_settings, settings_table
from .model import ENV_PREFIX, Settings

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "describe_errors",
    "load_settings",
    "settings_table",
]
