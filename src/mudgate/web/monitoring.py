"""The operators' API: ``/monitoring/*`` and ``/health/*`` (DESIGN.md section 5).

Shapes are kept compatible with what operators already script against; every response is a
pydantic model, so ``/openapi.json`` documents each field.
"""

# No `from __future__ import annotations`: FastAPI resolves the routes' dependencies at runtime.
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from ..cleanup import CleanupReport, Janitor, Trigger
from ..lag import LoopLag
from ..memory.budget import memory_budget
from ..memory.monitor import MIB, MemorySample
from ..protocol import CloseCode, ErrorCode
from ..sockets import SocketStats, SocketTable
from .admin import logger
from .errors import APIError

__all__ = ["monitoring_router"]

DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"


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
    http: int = Field(description="A request being received or answered (SSE streams too).")
    websocket: int
    refused: int = Field(description="Closed on arrival: every socket was busy.")
    evicted: int = Field(description="Closed to make room while waiting for a request.")
    timed_out: int = Field(description="No whole request within MUDGATE_REQUEST_TIMEOUT.")
    head_too_large: int = Field(description="Refused with 414 or 431.")
    malformed: int = Field(description="Refused with 400: not HTTP, or not a valid handshake.")
    control_flood: int = Field(description="WebSockets closed (1008) for too many pings.")

    @classmethod
    def of(cls, stats: SocketStats) -> "SocketCounts":
        return cls(open=stats.open, capacity=stats.capacity, **stats.by_kind, **stats.events)


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


class MemoryReport(BaseModel):
    memory: MemoryInfo
    connections: ConnectionCounts
    sockets: SocketCounts = Field(description="Every TCP connection, below the players.")
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


def _iso(epoch_seconds: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC).isoformat()


def monitoring_router(
    janitor: Janitor,
    sockets: SocketTable,
    admin: Callable[..., str],
    registry: CollectorRegistry,
) -> APIRouter:
    """The monitoring and health endpoints, reading from ``janitor`` (and its hub) and the
    socket table."""
    router = APIRouter()
    hub, watch, settings = janitor.hub, janitor.watch, janitor.settings

    @router.get("/monitoring/memory", response_model=MemoryReport, tags=["monitoring"])
    async def memory() -> MemoryReport:
        """Memory now, every structure's size, cleanup totals, thresholds, and the budget."""
        # A reading of its own, so the report is current; the level and shedding are the
        # watch's, advanced only by the janitor's tick (a GET changes nothing).
        sample = watch.monitor.read(record=False)
        stats = hub.stats().as_dict()
        budget = memory_budget(settings, sample.limit_bytes)
        return MemoryReport(
            memory=MemoryInfo.of(sample),
            connections=ConnectionCounts.model_validate(stats),
            sockets=SocketCounts.of(sockets.stats()),
            event_loop=EventLoop.of(watch.lag),
            data_structures=DataStructures.model_validate(stats),
            cleanup_stats=CleanupStatsModel.model_validate(janitor.stats, from_attributes=True),
            memory_monitor=MonitorConfig(
                cleanup_interval=settings.cleanup_interval,
                check_interval=settings.check_interval,
                memory_threshold=settings.memory_threshold,
                pressure_cleanup_cooldown=settings.pressure_cleanup_cooldown,
                pending_message_ttl=settings.pending_message_ttl,
                max_pending_messages=settings.max_pending_messages,
                connection_attempt_ttl=settings.connection_attempt_ttl,
                max_rate_limit_entries=settings.max_rate_limit_entries,
                large_structure_threshold=settings.large_structure_threshold,
                max_connection_age=settings.max_connection_age,
                idle_timeout=settings.idle_timeout,
                memory_info_percent=settings.memory_info_percent,
                memory_warning_percent=settings.memory_warning_percent,
                memory_critical_percent=settings.memory_critical_percent,
                level=str(watch.levels.level) if watch.levels.level else None,
                shedding=hub.shedding,
            ),
            memory_budget=MemoryBudgetModel(
                lines=[
                    BudgetLineModel(
                        structure=line.structure,
                        max_entries=line.max_entries,
                        bytes_per_entry=line.bytes_per_entry,
                        worst_case_mb=round(line.worst_case_bytes / MIB, 2),
                    )
                    for line in budget.lines
                ],
                total_mb=round(budget.total_bytes / MIB, 2),
                limit_mb=round(budget.limit_bytes / MIB, 2),
                fits=budget.fits,
            ),
            recent_cleanups=[CleanupResult.of(report) for report in janitor.stats.recent],
        )

    @router.get("/monitoring/memory-alerts", response_model=AlertsReport, tags=["monitoring"])
    async def memory_alerts() -> AlertsReport:
        """The alerts active now, as strings and in detail."""
        alerts = janitor.alerts()
        return AlertsReport(
            alerts=[str(alert) for alert in alerts],
            alert_count=len(alerts),
            timestamp=datetime.datetime.now(datetime.UTC).isoformat(),
            details=[
                AlertDetail(
                    level=str(alert.level),
                    code=alert.code,
                    message=alert.message,
                    value=alert.value,
                    threshold=alert.threshold,
                )
                for alert in alerts
            ],
        )

    @router.post(
        "/monitoring/memory/cleanup",
        response_model=CleanupResult,
        tags=["monitoring"],
        responses={401: {}, 403: {}, 429: {}},
    )
    async def force_cleanup(
        remote: Annotated[str, Depends(admin)],
        dry_run: Annotated[
            bool, Query(description="Report what would go; remove nothing.")
        ] = False,
    ) -> CleanupResult:
        """Run a cleanup now (admin). Rate-limited; every call is logged with its outcome."""
        wait = janitor.forced_cleanup_wait()
        if wait > 0:
            logger.warning("admin forced cleanup from %s refused: rate-limited", remote)
            raise APIError(
                429,
                ErrorCode.RATE_LIMITED,
                f"a cleanup was forced recently; try again in {wait:.0f} s",
                {"Retry-After": str(max(1, round(wait)))},
            )
        report = await janitor.clean(Trigger.FORCED, dry_run=dry_run)
        logger.warning(
            "admin forced cleanup",
            extra={
                "remote": remote,
                "dry_run": dry_run,
                "removed": report.removed,
                "duration_ms": round(report.duration_seconds * 1000, 3),
            },
        )
        return CleanupResult.of(report)

    @router.get(
        "/monitoring/players",
        response_model=PlayersReport,
        tags=["monitoring"],
        responses={401: {}, 403: {}, 429: {}},
    )
    async def players(
        remote: Annotated[str, Depends(admin)],
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 200,
    ) -> PlayersReport:
        """Who is connected to this node (admin): each connection's player, room, transport,
        age and outbox, longest connected first."""
        now = hub.clock()
        rows = [
            PlayerConnection(
                player=conn.player_id,
                room=hub.room_of(conn.player_id),
                connection=conn.id,
                transport=conn.transport,
                connected_seconds=round(now - conn.connected_at, 1),
                outbox_messages=conn.outbox_messages,
                outbox_bytes=conn.outbox_bytes,
            )
            for conn in sorted(hub.connections(), key=lambda conn: conn.connected_at)[:limit]
        ]
        return PlayersReport(total=len(hub.registry), connections=rows)

    @router.post(
        "/monitoring/players/{player_id}/disconnect",
        response_model=Disconnected,
        tags=["monitoring"],
        responses={401: {}, 403: {}, 404: {}, 429: {}},
    )
    async def disconnect_player(
        player_id: str, remote: Annotated[str, Depends(admin)]
    ) -> Disconnected:
        """Close every connection of ``player_id`` on this node with 4003 (admin); clients
        do not reconnect by themselves after it."""
        connections = hub.registry.connections_of(player_id)
        if not connections:
            raise APIError(404, ErrorCode.NOT_CONNECTED, f"{player_id!r} is not connected here")
        for conn in connections:
            conn.close(CloseCode.DISCONNECTED, "disconnected by an operator")
        logger.warning(
            "admin disconnected a player",
            extra={"remote": remote, "player": player_id, "connections": len(connections)},
        )
        return Disconnected(player=player_id, connections=len(connections))

    @router.get("/monitoring/memory/history", response_model=HistoryReport, tags=["monitoring"])
    async def history(
        window: Annotated[
            float, Query(gt=0, le=86400, description="Seconds back from now (at most a day).")
        ] = 3600,
    ) -> HistoryReport:
        """Memory, connections and structure sizes over time: every sample_interval for the
        last history_seconds, one point per minute (its lowest RSS) before that."""
        return HistoryReport(
            window_seconds=window,
            points=[
                HistoryPointModel(
                    at=_iso(point.at),
                    rss_mb=point.rss_mb,
                    percent=point.percent,
                    limit_mb=point.limit_mb,
                    connections=point.connections,
                    structures=dict(point.structures),
                )
                for point in watch.history.points(window)
            ],
        )

    @router.get("/monitoring/memory/trend", response_model=TrendReport, tags=["monitoring"])
    async def trend(
        window: Annotated[
            float, Query(gt=0, le=86400, description="Seconds back from now.")
        ] = 3600,
    ) -> TrendReport:
        """The slope of memory's floor, how straight it is, and whether it looks like a leak."""
        fitted = watch.history.trend(window)
        return TrendReport(
            slope_mb_per_hour=fitted.slope_mb_per_hour,
            r_squared=fitted.r_squared,
            points=fitted.points,
            window_seconds=fitted.window_seconds,
            hours_to_limit=fitted.hours_to_limit,
            connections_change=fitted.connections_change,
            leak_suspected=fitted.leak_suspected,
            growing_structure=fitted.growing_structure,
            explanation=fitted.explanation,
        )

    @router.get(
        "/metrics",
        tags=["monitoring"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics() -> Response:
        """Prometheus text format, served at exactly this path (no redirect)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/dashboard", response_class=HTMLResponse, tags=["monitoring"])
    async def dashboard() -> HTMLResponse:
        """The live dashboard: memory chart, connections, structures, alerts, cleanups."""
        return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))

    @router.get("/health/live", response_model=Health, tags=["health"])
    async def live() -> Health:
        """Whether the process serves at all. Never depends on memory: a liveness probe that
        fails under pressure turns a blip into a restart storm."""
        return Health(status="ok")

    @router.get(
        "/health/ready", response_model=Health, tags=["health"], responses={503: {"model": Health}}
    )
    async def ready() -> JSONResponse:
        """Whether to send new players here: 503 while memory pressure sheds load; ``degraded``
        (still 200) while a configured backplane cannot be reached."""
        if hub.shedding:
            body = Health(status="shedding", detail="memory pressure: new connections refused")
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "30"})
        if hub.backplane.problem is not None:
            # Still ready: its own players play on, they just cannot reach other nodes.
            body = Health(status="degraded", detail=hub.backplane.problem)
            return JSONResponse(body.model_dump())
        return JSONResponse(Health(status="ready").model_dump())

    return router
