"""Every tunable of mudgate: limits, timeouts and addresses, with their defaults.

Values come, highest priority first, from keyword arguments, ``MUDGATE_*`` environment
variables, and the TOML file named by ``MUDGATE_CONFIG``. Invalid values fail at start-up with
a message naming the variable (see ``describe_errors``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "describe_errors",
    "load_settings",
    "settings_table",
]

ENV_PREFIX = "MUDGATE_"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Percent = Annotated[float, Field(gt=0, le=100)]
# 0 disables the timeout it configures.
OptionalSeconds = Annotated[float, Field(ge=0)]


# The TOML file named on the command line; it takes the place of MUDGATE_CONFIG.
_config_file: ContextVar[Path | None] = ContextVar("mudgate_config_file", default=None)


class SettingsError(Exception):
    """Invalid configuration; the message names each offending variable."""


class Settings(BaseSettings):
    """mudgate's configuration. Each field is the environment variable ``MUDGATE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # Serving
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(
        54731, ge=0, le=65535, description="TCP port to listen on (0: any free port)."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs player tokens (at least 32 characters). "
        "Unset or empty: a random one per start, so tokens do not survive a restart.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for admin endpoints (at least 16 characters). Unset or empty: "
        "a random one, logged once at start.",
    )
    allow_guests: bool = Field(True, description="Whether `POST /auth/guest` issues guest tokens.")
    token_ttl: PositiveSeconds = Field(86400.0, description="Lifetime of a player token, seconds.")
    guest_token_ttl: PositiveSeconds = Field(
        3600.0, description="Lifetime of a guest token, seconds."
    )
    guest_tokens_per_minute: PositiveInt = Field(
        10, description="Guest tokens one IP address may obtain per minute."
    )
    admin_failures_per_minute: PositiveInt = Field(
        10,
        description="Wrong admin tokens one IP address may present per minute; past it admin "
        "endpoints answer 429 to that address.",
    )

    # Structures (DESIGN.md section 3)
    max_connections: PositiveInt = Field(
        10000, description="Open WebSocket plus SSE connections; past it new ones get 1013/503."
    )
    max_connections_per_player: PositiveInt = Field(
        3, description="Connections one player may hold; the oldest is closed (4009) past it."
    )
    max_players: PositiveInt = Field(
        10000, description="Players online at once; also caps last_seen."
    )
    max_pending_messages: PositiveInt = Field(
        1000, description="Messages queued for one briefly offline player; the oldest go first."
    )
    pending_message_ttl: PositiveSeconds = Field(
        3600.0, description="How long a queued message waits for its player, seconds."
    )
    max_pending_bytes: PositiveInt = Field(
        64 * 1024 * 1024,
        description="Bytes of messages queued for all offline players together; past it, "
        "a tell to an offline player is refused.",
    )
    max_rate_limit_entries: PositiveInt = Field(
        1000,
        description="Connection attempts allowed per player and per IP address within "
        "connection_attempt_ttl.",
    )
    max_rate_limit_keys: PositiveInt = Field(
        100000, description="Players and IPs tracked for rate limiting; the idlest is forgotten."
    )
    connection_attempt_ttl: PositiveSeconds = Field(
        3600.0, description="Window of the connection-attempt rate limit, seconds."
    )
    last_seen_ttl: PositiveSeconds = Field(
        3600.0,
        description="How long a player who left is remembered (and receives pending messages).",
    )
    max_subscriptions_per_player: PositiveInt = Field(
        128, description="Channels one player may subscribe to."
    )

    # Connections
    max_connection_age: OptionalSeconds = Field(
        3600.0, description="Connections older than this are recycled (4010), seconds; 0: never."
    )
    idle_timeout: OptionalSeconds = Field(
        1800.0,
        description="Connections that sent nothing for this long are closed (4011), "
        "seconds; 0: never.",
    )
    ping_interval: PositiveSeconds = Field(
        20.0, description="WebSocket ping and SSE keep-alive interval, seconds."
    )
    ping_timeout: PositiveSeconds = Field(
        20.0, description="How long a ping may go unanswered before the peer is dropped, seconds."
    )
    max_message_bytes: PositiveInt = Field(
        65536, description="Largest frame a client may send; larger ones close with 1009."
    )
    outbox_max_messages: PositiveInt = Field(
        1000, description="Messages queued for one connection before it is a slow consumer."
    )
    outbox_max_bytes: PositiveInt = Field(
        262144, description="Bytes queued for one connection before it is a slow consumer (4008)."
    )
    write_timeout: PositiveSeconds = Field(
        10.0, description="How long one write to a client may block before 4008, seconds."
    )
    bad_frame_limit: PositiveInt = Field(
        10, description="Bad frames a connection may send per bad_frame_window before 1008."
    )
    bad_frame_window: PositiveSeconds = Field(
        10.0, description="Window of the bad-frame limit, seconds."
    )
    ws_per_message_deflate: bool = Field(
        False, description="WebSocket compression; costs 64-316 KiB per connection."
    )
    control_frame_limit: PositiveInt = Field(
        20,
        description="WebSocket pings (and unsolicited pongs) a client may send per "
        "control_frame_window; past it the connection is closed with 1008.",
    )
    control_frame_window: PositiveSeconds = Field(
        10.0, description="Window of the control-frame limit, seconds."
    )

    # What one player may send (DESIGN.md invariant 10)
    player_messages_per_second: PositiveFloat = Field(
        10.0,
        description="Frames one player may send per second, all their connections and POST "
        "/commands together, once their burst is spent; past it: a rate_limited error.",
    )
    player_message_burst: PositiveInt = Field(
        30,
        description="Frames a player may send at once before the per-second rate applies; a "
        "player who sends another burst while limited is closed with 4029.",
    )
    max_pending_per_sender: PositiveInt = Field(
        100,
        description="Messages one player may have waiting for players who are away (here or "
        "in Redis); past it their tells to absent players are refused.",
    )

    # Below ASGI: every TCP connection, whatever it carries (DESIGN.md invariant 9)
    max_sockets: PositiveInt = Field(
        11000,
        description="Open TCP connections of every kind. Past it, the oldest connection still "
        "waiting for a request is closed to make room; if none is, the new one is closed at "
        "once. Lowered at start to fit the process's file descriptor limit.",
    )
    request_timeout: PositiveSeconds = Field(
        10.0,
        description="Time a client has to send a whole request (line, headers, body) after "
        "connecting or after its previous response; past it: 408 and closed, seconds.",
    )
    keep_alive_timeout: PositiveSeconds = Field(
        5.0, description="How long an HTTP connection may wait idle for its next request, seconds."
    )
    max_request_head_bytes: Annotated[int, Field(ge=1024)] = Field(
        16384,
        description="Largest request line plus headers; past it: 414 (a longer request line) "
        "or 431, and closed.",
    )
    write_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        65536,
        description="Bytes the server buffers for one connection above the kernel's; past it "
        "the connection is not read until the client catches up (read backpressure).",
    )
    socket_send_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        32768,
        description="SO_SNDBUF of every accepted socket: what the kernel may hold for a client "
        "that does not read (it allows twice this, for its bookkeeping).",
    )
    socket_receive_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        16384,
        description="SO_RCVBUF of every accepted socket: what the kernel may hold from a client "
        "that is not being read (it allows twice this).",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxies trusted to set X-Forwarded-For and X-Forwarded-Proto "
        "(comma-separated addresses or networks, `*` for any); none: every client is who "
        "its TCP address says.",
    )
    shutdown_timeout: PositiveSeconds = Field(
        5.0,
        description="On SIGTERM, how long players get to receive their close (1012) before "
        "the rest is shut down, seconds.",
    )

    # Memory monitoring and cleanup (DESIGN.md sections 2, 7 and 8)
    memory_limit_mb: PositiveFloat | None = Field(
        None,
        description="Memory limit in MiB; the effective limit is the smallest of this, the "
        "cgroup limit and physical memory.",
    )
    cgroup_root: Path = Field(
        Path("/sys/fs/cgroup"), description="Where the cgroup file system is mounted."
    )
    cgroup_refresh_interval: PositiveSeconds = Field(
        60.0, description="How often the cgroup limit is read again, seconds."
    )
    check_interval: PositiveSeconds = Field(
        5.0, description="How often the janitor reads memory and decides to clean, seconds."
    )
    cleanup_interval: PositiveSeconds = Field(
        300.0, description="Time-based cleanup interval, seconds."
    )
    memory_threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.8, description="Memory fraction of the limit at which a pressure cleanup runs."
    )
    pressure_cleanup_cooldown: OptionalSeconds = Field(
        60.0, description="Least time between two pressure cleanups, seconds."
    )
    forced_cleanup_min_interval: OptionalSeconds = Field(
        10.0, description="Least time between two forced (admin) cleanups, seconds."
    )
    memory_info_percent: Percent = Field(70.0, description="Memory percent of an INFO alert.")
    memory_warning_percent: Percent = Field(
        80.0, description="Memory percent of a WARNING alert; shedding stops below it."
    )
    memory_critical_percent: Percent = Field(
        90.0, description="Memory percent of a CRITICAL alert; new connections are refused."
    )
    memory_alert_hysteresis: Annotated[float, Field(ge=0, lt=50)] = Field(
        5.0, description="Points below its threshold at which a memory alert clears."
    )
    memory_alert_hold: OptionalSeconds = Field(
        10.0, description="How long memory must stay over a threshold before it alerts, seconds."
    )
    large_structure_threshold: PositiveInt = Field(
        1000, description="A structure larger than this raises a LARGE_STRUCTURE warning."
    )
    alert_text: Literal["mudgate", "legacy"] = Field(
        "mudgate",
        description="Alert wording: mudgate's, or `legacy`, the original memory-leak-prevention "
        "system's (`Large number of rate limit entries: 1500`, `3 stale connections detected`) "
        "for scripts that match on it.",
    )
    slow_consumer_alert_window: PositiveSeconds = Field(
        300.0, description="How long a slow-consumer disconnect keeps its alert up, seconds."
    )
    loop_lag_threshold: PositiveSeconds = Field(
        0.5,
        description="How late the event loop may run before EVENT_LOOP_BLOCKED fires (a "
        "command or hook that blocks it freezes every player), seconds.",
    )

    # History, trend and leak suspicion (DESIGN.md section 8)
    sample_interval: PositiveSeconds = Field(
        10.0, description="How often memory is recorded in the history, seconds."
    )
    history_seconds: PositiveSeconds = Field(
        3600.0, description="History kept at full resolution, seconds (then per minute for 24 h)."
    )
    trend_warmup: OptionalSeconds = Field(
        300.0, description="Start-up period the trend ignores, seconds."
    )
    leak_slope_mb_per_hour: PositiveFloat = Field(
        10.0, description="Steady growth above this, with flat connections, suspects a leak, MiB/h."
    )
    leak_min_r2: Annotated[float, Field(ge=0, le=1)] = Field(
        0.8, description="How straight the growth must be (r squared) to suspect a leak."
    )

    # Many processes (DESIGN.md section 6)
    workers: PositiveInt = Field(
        1,
        description="Processes serving the port (SO_REUSEPORT), one per core: each is a node "
        "of the backplane, so more than 1 needs `MUDGATE_BACKPLANE`.",
    )
    backplane: str | None = Field(
        None,
        description="`redis://host:port/db` to share rooms, channels, direct messages and "
        "presence with other nodes through Redis; unset: this process alone.",
    )
    redis_prefix: str = Field(
        "mudgate",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key and channel, so several games can share a Redis.",
    )
    presence_ttl: PositiveSeconds = Field(
        60.0,
        description="Lifetime of a node's presence lease in Redis; a node that dies drops out "
        "of the cluster within it, seconds.",
    )
    presence_refresh: PositiveSeconds = Field(
        20.0, description="How often a node renews its presence lease, seconds."
    )
    backplane_timeout: PositiveSeconds = Field(
        2.0, description="How long one Redis call may take before Redis counts as away, seconds."
    )
    backplane_retry_max: PositiveSeconds = Field(
        30.0, description="Longest wait between two attempts to reach Redis again, seconds."
    )
    backplane_queue_size: PositiveInt = Field(
        10000,
        description="Messages waiting to be written to Redis; past it (or while Redis is away) "
        "they are dropped and counted.",
    )

    # Notifications and diagnostics
    alert_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URLs that receive a JSON POST when an alert starts and resolves "
        "(comma-separated).",
    )
    alert_cooldown: OptionalSeconds = Field(
        300.0, description="Least time between two notifications of the same alert, seconds."
    )
    webhook_timeout: PositiveSeconds = Field(
        5.0, description="Timeout of one webhook POST, seconds."
    )
    webhook_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        3, description="Retries of a failed webhook POST, with backoff."
    )
    webhook_queue_size: PositiveInt = Field(
        100, description="Notifications waiting to be sent; past it the oldest are dropped."
    )
    node_name: str = Field(
        default_factory=socket.gethostname, description="This node's name in notifications."
    )
    node_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description="This node's id in the cluster (default: its name, pid and a random "
        "suffix). A node started with the id of one that died takes over its presence at once "
        "instead of after `MUDGATE_PRESENCE_TTL`; two live nodes must never share one.",
    )
    tracemalloc_max_seconds: PositiveSeconds = Field(
        300.0, description="tracemalloc stops by itself after this long, seconds."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines as JSON, for people, or auto (people on a terminal)."
    )

    @field_validator("alert_webhooks", mode="before")
    @classmethod
    def _split_webhooks(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("alert_webhooks")
    @classmethod
    def _check_webhooks(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return urls

    @model_validator(mode="after")
    def _check_alert_order(self) -> Settings:
        if not (
            self.memory_info_percent < self.memory_warning_percent < self.memory_critical_percent
        ):
            raise ValueError(
                "MUDGATE_MEMORY_INFO_PERCENT < MUDGATE_MEMORY_WARNING_PERCENT < "
                "MUDGATE_MEMORY_CRITICAL_PERCENT must hold"
            )
        return self

    @field_validator("backplane")
    @classmethod
    def _check_backplane(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a redis:// URL: {url!r}")
        return url or None

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.workers > 1 and self.backplane is None:
            raise ValueError(
                f"MUDGATE_WORKERS={self.workers} needs MUDGATE_BACKPLANE=redis://host:port/db: "
                "workers share rooms, tells and presence through Redis (or set "
                "MUDGATE_WORKERS=1)"
            )
        return self

    @model_validator(mode="after")
    def _check_presence(self) -> Settings:
        if self.presence_refresh >= self.presence_ttl:
            raise ValueError(
                "MUDGATE_PRESENCE_REFRESH must be shorter than MUDGATE_PRESENCE_TTL, or a live "
                "node's lease would lapse between two renewals"
            )
        return self

    @field_validator("secret_key", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MUDGATE_ADMIN_TOKEN=` in a compose file or unit means "not set", not "the empty
        # token" (which nobody could present, locking the admin out).
        return None if value == "" else value

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 wants a key at least as long as its 256-bit digest.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters long")
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        # Short enough to guess is as good as none.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters long")
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            if address != "*":
                try:
                    ipaddress.ip_network(address, strict=False)
                except ValueError:
                    raise ValueError(f"not an address or network: {address!r}") from None
        return addresses

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
        config = _config_file.get() or os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(config)),)
        return sources


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
    token = _config_file.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
    finally:
        _config_file.reset(token)


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
