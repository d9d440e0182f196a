"""The shapes of the operators' API (``/monitoring/*``, ``/health/*``): pydantic models, so
``/openapi.json`` documents each field. Kept compatible with what operators already script
against."""

# No `from __future__ import annotations`: pydantic and FastAPI read the annotations at runtime.
from pydantic import BaseModel, Field

from ..cleanup import CleanupReport
from ..command_stats import OpStats
from ..health.lag import LoopLag
from ..memory.monitor import MIB, MemorySample
from ..server.sockets import SocketStats
from ..server.telnet import TelnetListener


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 2)


class MemoryInfo(BaseModel):
    rss_mb: float = Field(description="Resident set size of this process.")
    vms_mb: float = Field(description="Virtual memory size of this process.")
    percent: float = Field(description="Usage over the effective limit, 0-100.")
    available_mb: float = Field(description="Memory left before the effective limit.")
    total_mb: float = Field(description="Physical memory of the machine.")
    limit_mb: float = Field(description="The effective limit percent is measured against.")
    limit_source: str = Field(
        description="Which limit applied: physical, configured, cgroup-v1/v2."
    )
    working_set_mb: float | None = Field(description="The cgroup's working set, under a limit.")
    cgroup_high_mb: float | None = Field(description="The cgroup v2 throttle point, if any.")
    error: str | None = Field(description="Why the last read failed, if it did.")

    @classmethod
    def of(cls, sample: MemorySample) -> "MemoryInfo":
        return cls(
            rss_mb=round(sample.rss_bytes / MIB, 2),
            vms_mb=round(sample.vms_bytes / MIB, 2),
            percent=sample.percent,
            available_mb=round(sample.available_bytes / MIB, 2),
            total_mb=round(sample.total_bytes / MIB, 2),
            limit_mb=round(sample.limit_bytes / MIB, 2),
            limit_source=sample.limit_source,
            working_set_mb=_mb(sample.working_set_bytes),
            cgroup_high_mb=_mb(sample.cgroup_high_bytes),
            error=sample.error,
        )


class ConnectionCounts(BaseModel):
    active_websockets: int
    active_sse: int
    active_telnet: int
    total_connections: int
    player_websockets: int
    connection_timestamps: int


class SocketCounts(BaseModel):
    open: int = Field(description="TCP connections of every kind, players included.")
    capacity: int = Field(
        description="MUDGATE_MAX_SOCKETS, as fitted to the file descriptor limit."
    )
    waiting: int = Field(
        description="Waiting for a request (new, idle or closing): the first to be evicted."
    )
    receiving: int = Field(
        description="A request whose body is still arriving: evicted like a waiting one."
    )
    http: int = Field(description="A request being answered (SSE streams too).")
    websocket: int
    telnet: int = Field(description="Telnet players (those still signing in are waiting).")
    compressed: int = Field(description="WebSockets with compression negotiated.")
    compressed_capacity: int = Field(description="MUDGATE_MAX_COMPRESSED_CONNECTIONS.")
    refused: int = Field(description="Closed on arrival: every socket was busy.")
    evicted: int = Field(description="Closed to make room while waiting for a request or its body.")
    timed_out: int = Field(description="No whole request within MUDGATE_REQUEST_TIMEOUT.")
    head_too_large: int = Field(description="Refused with 414 or 431.")
    malformed: int = Field(
        description="Refused with 400: not HTTP/1.1, ambiguous framing, or not a valid handshake."
    )
    control_flood: int = Field(description="WebSockets closed (1008) for too many pings.")
    fragment_flood: int = Field(
        description="WebSockets closed (1008) for a message in too many frames."
    )
    compression_declined: int = Field(
        description="Handshakes served without the compression they asked for (at the cap)."
    )

    @classmethod
    def of(cls, stats: SocketStats) -> "SocketCounts":
        return cls(
            open=stats.open,
            capacity=stats.capacity,
            compressed=stats.compressed,
            compressed_capacity=stats.compressed_capacity,
            **stats.by_kind,
            **stats.events,
        )


class DataStructures(BaseModel):
    online_players: int
    room_occupants: int
    room_subscriptions: int
    last_seen: int
    connection_attempts: int
    message_rate_limits: int = Field(description="Players whose message rate is being tracked.")
    pending_messages: int = Field(description="Players with queued messages.")
    pending_message_entries: int = Field(description="Queued messages, all players together.")
    pending_message_bytes: int
    room_history: int = Field(
        description="Rooms and channels whose position (epoch, latest offset) is kept, with "
        "their recent events, for players who reconnect (MUDGATE_ROOM_HISTORY_MAX_TOPICS)."
    )
    room_history_entries: int = Field(description="Events kept, all rooms and channels.")
    room_history_bytes: int = Field(
        description="Their bytes with their overhead (MUDGATE_ROOM_HISTORY_MAX_BYTES); kept "
        "in this process (in Redis with MUDGATE_BACKPLANE, while it can be reached)."
    )
    room_history_evicted: int = Field(
        description="Events let go before their time, at a room's count or bytes cap or the "
        "cap on all of them."
    )
    resumes: int = Field(description="Rooms and channels players asked to resume.")
    resumes_recovered: int = Field(description="Resumes that got back everything missed.")
    resumes_not_recovered: int = Field(
        description="Resumes told recovered: false (gone, a new epoch, too much, unavailable)."
    )
    events_replayed: int = Field(description="Events sent again to players who resumed.")
    commands_in_flight: int = Field(
        description="POST /commands under way (body arriving, or being handled)."
    )
    commands_refused: int = Field(
        description="POST /commands refused (429) at a cap of commands under way, per player "
        "or per address."
    )
    backplane_subscriptions: int = Field(
        0, description="Redis channels this node listens to (0 without a Redis backplane)."
    )
    backplane_queue: int = Field(0, description="Commands waiting to be written to Redis.")
    backplane_pending_players: int = Field(
        0, description="Players away with messages waiting in Redis (every node's)."
    )
    backplane_pending_bytes: int = Field(
        0, description="Bytes waiting in Redis for players who are away (every node's)."
    )
    backplane_history_kept: int = Field(
        0, description="Room and channel events this node published that Redis numbered and kept."
    )
    backplane_history_dropped: int = Field(
        0,
        description="Room and channel events Redis never numbered (queue full, Redis away): "
        "delivered on this node without an offset.",
    )
    backplane_history_topics: int = Field(
        0, description="Rooms and channels whose position Redis keeps (every node's)."
    )
    backplane_history_bytes: int = Field(
        0, description="Bytes of room and channel events Redis keeps (every node's)."
    )


class CleanupStatsModel(BaseModel):
    last_cleanup: float | None = Field(
        description="When the last cleanup started, seconds since the epoch."
    )
    last_cleanup_iso: str | None = Field(description="The same, ISO-8601 UTC.")
    cleanups_performed: int
    memory_cleanups: int
    time_cleanups: int
    forced_cleanups: int
    removed: dict[str, int] = Field(description="Entries removed so far, per structure.")
    last_duration_seconds: float
    last_memory_before_mb: float
    last_memory_after_mb: float
    last_trigger: str | None


class MonitorConfig(BaseModel):
    cleanup_interval: float
    check_interval: float
    memory_threshold: float
    pressure_cleanup_cooldown: float
    pending_message_ttl: float
    max_pending_messages: int
    connection_attempt_ttl: float
    max_rate_limit_entries: int
    large_structure_threshold: int
    max_connection_age: float = Field(
        description="Connections older than this are recycled, seconds (0: never)."
    )
    idle_timeout: float = Field(
        description="Connections silent this long are closed, seconds (0: never)."
    )
    memory_info_percent: float
    memory_warning_percent: float
    memory_critical_percent: float
    level: str | None = Field(description="The memory alert level in force.")
    shedding: bool = Field(description="Whether new connections are being refused.")


class BudgetLineModel(BaseModel):
    structure: str
    max_entries: int
    bytes_per_entry: int
    worst_case_mb: float


class MemoryBudgetModel(BaseModel):
    lines: list[BudgetLineModel]
    total_mb: float = Field(description="The worst case the caps allow, all together.")
    limit_mb: float
    fits: bool = Field(description="Whether the worst case fits under the effective limit.")


class CleanupResult(BaseModel):
    trigger: str
    dry_run: bool
    started_at: str
    removed: dict[str, int]
    removed_total: int
    memory_before_mb: float
    memory_after_mb: float
    memory_freed_mb: float
    duration_seconds: float
    gc_collected: int
    malloc_trimmed: bool

    @classmethod
    def of(cls, report: CleanupReport) -> "CleanupResult":
        return cls(
            trigger=report.trigger,
            dry_run=report.dry_run,
            started_at=report.started_at,
            removed=report.removed,
            removed_total=report.removed_total,
            memory_before_mb=report.memory_before_mb,
            memory_after_mb=report.memory_after_mb,
            memory_freed_mb=round(report.memory_before_mb - report.memory_after_mb, 2),
            duration_seconds=report.duration_seconds,
            gc_collected=report.gc_collected,
            malloc_trimmed=report.malloc_trimmed,
        )


class LoopBlock(BaseModel):
    seconds: float = Field(description="How long the loop was blocked.")
    running: str = Field(description="The command (and code) running when it was.")
    seconds_ago: float


class EventLoop(BaseModel):
    lag_seconds: float = Field(description="How late the loop woke at its last check (100 ms).")
    recent_max_lag_seconds: float = Field(description="The worst lag of the last minute.")
    threshold_seconds: float = Field(description="MUDGATE_LOOP_LAG_THRESHOLD.")
    last_block: LoopBlock | None = Field(
        description="The last time the loop was blocked past the threshold."
    )

    @classmethod
    def of(cls, lag: LoopLag) -> "EventLoop":
        block = lag.last_block
        now = lag.clock()
        return cls(
            lag_seconds=round(lag.latest_seconds, 6),
            recent_max_lag_seconds=round(lag.recent_max(), 6),
            threshold_seconds=lag.threshold_seconds,
            last_block=None
            if block is None
            else LoopBlock(
                seconds=round(block.seconds, 3),
                running=block.running,
                seconds_ago=round(now - block.started_at, 3),
            ),
        )


class TelnetReport(BaseModel):
    port: int | None = Field(description="The telnet port (MUDGATE_TELNET_PORT), once listening.")
    logging_in: int = Field(description="Connected and not signed in yet.")
    compressed: int = Field(description="Connections with MCCP2 compression on.")
    compressed_capacity: int = Field(description="MUDGATE_TELNET_MAX_COMPRESSED.")
    events: dict[str, int] = Field(
        description="What the telnet layer refused or ended: line_too_long, "
        "subnegotiation_too_long, command_flood, login_timeout, login_failed, refused, "
        "compression_declined, bad_gmcp."
    )

    @classmethod
    def of(cls, listener: TelnetListener) -> "TelnetReport":
        stats = listener.stats()
        return cls(
            port=listener.address[1] if listener.address else None,
            logging_in=stats.logging_in,
            compressed=stats.compressed,
            compressed_capacity=stats.compressed_capacity,
            events=stats.events,
        )


class MemoryReport(BaseModel):
    memory: MemoryInfo
    connections: ConnectionCounts
    sockets: SocketCounts = Field(description="Every TCP connection, below the players.")
    telnet: TelnetReport | None = Field(
        None, description="The telnet listener, when MUDGATE_TELNET_PORT is set."
    )
    event_loop: EventLoop = Field(description="How late the one loop serving everyone runs.")
    data_structures: DataStructures
    cleanup_stats: CleanupStatsModel
    memory_monitor: MonitorConfig
    memory_budget: MemoryBudgetModel
    recent_cleanups: list[CleanupResult] = Field(description="The last ten, oldest first.")


class AlertDetail(BaseModel):
    level: str
    code: str
    message: str
    value: float
    threshold: float


class AlertsReport(BaseModel):
    alerts: list[str] = Field(description='Operators\' form: "WARNING: Memory usage at 81.3%".')
    alert_count: int
    timestamp: str = Field(description="ISO-8601 UTC.")
    details: list[AlertDetail]


class Health(BaseModel):
    status: str
    detail: str | None = None


class PlayerConnection(BaseModel):
    player: str
    room: str | None
    connection: str
    transport: str
    connected_seconds: float
    outbox_messages: int
    outbox_bytes: int


class PlayersReport(BaseModel):
    total: int = Field(description="Connections on this node (the list may stop short).")
    connections: list[PlayerConnection]


class CommandLatency(BaseModel):
    op: str = Field(description="The op; (unknown) gathers ops nobody registered and bad frames.")
    count: int = Field(description="Commands handled since start, errors included.")
    errors: int = Field(description="Of those, answered with an error.")
    errors_by_code: dict[str, int] = Field(description="The errors by their code.")
    mean_seconds: float = Field(description="Mean time from the frame read to the answer.")
    p50_seconds: float = Field(description="Median, estimated from the histogram's buckets.")
    p99_seconds: float = Field(
        description="99th percentile, estimated from the histogram's buckets (5 s at most)."
    )

    @classmethod
    def of(cls, stats: OpStats) -> "CommandLatency":
        return cls(
            op=stats.op,
            count=stats.count,
            errors=stats.error_count,
            errors_by_code=dict(stats.errors),
            mean_seconds=round(stats.mean_seconds, 6),
            p50_seconds=round(stats.quantile(0.5), 6),
            p99_seconds=round(stats.quantile(0.99), 6),
        )


class CommandsReport(BaseModel):
    total: int = Field(description="Commands handled on this node since start, every op.")
    errors: int = Field(description="Of those, answered with an error.")
    slowest: list[CommandLatency] = Field(
        description="The ops with the highest p99 (then mean) since start, slowest first."
    )


class Disconnected(BaseModel):
    player: str
    connections: int = Field(description="How many of the player's connections were closed.")


class HistoryPointModel(BaseModel):
    at: str = Field(description="ISO-8601 UTC.")
    rss_mb: float
    percent: float
    limit_mb: float
    connections: int
    structures: dict[str, int]


class HistoryReport(BaseModel):
    window_seconds: float
    points: list[HistoryPointModel]


class TrendReport(BaseModel):
    slope_mb_per_hour: float = Field(description="Least-squares slope of per-minute minimums.")
    r_squared: float = Field(description="How well a straight line fits, 0-1.")
    points: int
    window_seconds: float
    hours_to_limit: float | None = Field(description="At this slope; null when not rising.")
    connections_change: int
    leak_suspected: bool
    growing_structure: str | None = Field(description="The structure that grew with memory.")
    explanation: str
