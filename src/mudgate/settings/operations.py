"""The operators' settings: memory and cleanup, history and trend, the cluster, notifications.
``Settings`` (model.py) combines these groups with gateway.py's; each field is
``MUDGATE_<NAME>``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from .types import OptionalSeconds, Percent, PositiveFloat, PositiveInt, PositiveSeconds


class Memory(BaseModel):
    """Memory monitoring, cleanup and alerts (DESIGN.md sections 2, 7 and 8)."""

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
        5.0,
        description="How often memory is read and the janitor asked whether to clean, seconds.",
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

    @model_validator(mode="after")
    def _check_alert_order(self) -> Self:
        if not (
            self.memory_info_percent < self.memory_warning_percent < self.memory_critical_percent
        ):
            raise ValueError(
                "MUDGATE_MEMORY_INFO_PERCENT < MUDGATE_MEMORY_WARNING_PERCENT < "
                "MUDGATE_MEMORY_CRITICAL_PERCENT must hold"
            )
        return self


class History(BaseModel):
    """History, trend and leak suspicion (DESIGN.md section 8)."""

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


class Cluster(BaseModel):
    """Many processes (DESIGN.md section 6)."""

    workers: PositiveInt = Field(
        1,
        description="Processes serving the port (SO_REUSEPORT), one per core: each is a node "
        "of the backplane, so more than 1 needs `MUDGATE_BACKPLANE`.",
    )
    worker_heartbeat_timeout: OptionalSeconds = Field(
        20.0,
        description="A worker whose event loop has not sent the supervisor a heartbeat for "
        "this long (blocked, or the process stopped) is killed and started again, so that it "
        "no longer takes a share of the new connections; counted from its first heartbeat, "
        "once it listens, seconds; 0: never.",
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
    backplane_queue_bytes: PositiveInt = Field(
        8 * 1024 * 1024,
        description="Bytes of messages waiting to be written to Redis; past it the oldest are "
        "dropped and counted, as past backplane_queue_size.",
    )

    @field_validator("backplane")
    @classmethod
    def _check_backplane(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a redis:// URL: {url!r}")
        return url or None

    @model_validator(mode="after")
    def _check_workers(self) -> Self:
        if self.workers > 1 and self.backplane is None:
            raise ValueError(
                f"MUDGATE_WORKERS={self.workers} needs MUDGATE_BACKPLANE=redis://host:port/db: "
                "workers share rooms, tells and presence through Redis (or set "
                "MUDGATE_WORKERS=1)"
            )
        return self

    @model_validator(mode="after")
    def _check_presence(self) -> Self:
        if self.presence_refresh >= self.presence_ttl:
            raise ValueError(
                "MUDGATE_PRESENCE_REFRESH must be shorter than MUDGATE_PRESENCE_TTL, or a live "
                "node's lease would lapse between two renewals"
            )
        return self


class Notifications(BaseModel):
    """Notifications, node identity and diagnostics."""

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
