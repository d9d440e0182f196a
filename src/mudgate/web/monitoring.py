"""The operators' API: ``/monitoring/*`` and ``/health/*`` (DESIGN.md section 5).

Every response is one of models.py's pydantic models, so ``/openapi.json`` documents each
field.
"""

# No `from __future__ import annotations`: FastAPI resolves the routes' dependencies at runtime.
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..cleanup import Janitor, Trigger
from ..command_stats import CommandStats
from ..health.lag import LoopLag
from ..health.levels import MemoryLevels
from ..health.watch import HealthWatch
from ..hub import Hub
from ..memory.budget import memory_budget
from ..memory.history import MemoryHistory
from ..memory.monitor import MIB, MemoryMonitor
from ..protocol import CloseCode, ErrorCode
from ..server.sockets import SocketTable
from ..server.telnet import TelnetListener
from ..settings import Settings
from .admin import logger
from .errors import APIError
from .models import (
    AlertDetail,
    AlertsReport,
    BudgetLineModel,
    CleanupResult,
    CleanupStatsModel,
    CommandLatency,
    CommandsReport,
    ConnectionCounts,
    DataStructures,
    Disconnected,
    EventLoop,
    Health,
    HistoryPointModel,
    HistoryReport,
    MemoryBudgetModel,
    MemoryInfo,
    MemoryReport,
    MonitorConfig,
    PlayerConnection,
    PlayersReport,
    SocketCounts,
    TelnetReport,
    TrendReport,
)

__all__ = ["monitoring_router"]

DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"


def _iso(epoch_seconds: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC).isoformat()


def monitoring_router(
    *,
    settings: Settings,
    clock: Callable[[], float],
    hub: Hub,
    monitor: MemoryMonitor,
    watch: HealthWatch,
    levels: MemoryLevels,
    history: MemoryHistory,
    lag: LoopLag,
    janitor: Janitor,
    sockets: SocketTable,
    command_stats: CommandStats,
    admin: Callable[..., str],
    registry: CollectorRegistry,
    telnet: TelnetListener | None = None,
) -> APIRouter:
    """The monitoring and health endpoints: reads of the hub, the memory monitor, the health
    watch, the janitor, the socket table and the command stats; the admin's forced cleanup and
    disconnect."""
    router = APIRouter()

    @router.get("/monitoring/memory", response_model=MemoryReport, tags=["monitoring"])
    async def memory() -> MemoryReport:
        """Memory now, every structure's size, cleanup totals, thresholds, and the budget."""
        # A reading of its own, so the report is current; the level and shedding are the
        # watch's, advanced only by the health watch's tick (a GET changes nothing).
        sample = monitor.read(record=False)
        stats = hub.stats().as_dict()
        first = monitor.first
        budget = memory_budget(settings, sample.limit_bytes, first.used_bytes if first else 0)
        return MemoryReport(
            memory=MemoryInfo.of(sample),
            connections=ConnectionCounts.model_validate(stats),
            sockets=SocketCounts.of(sockets.stats()),
            telnet=None if telnet is None else TelnetReport.of(telnet),
            event_loop=EventLoop.of(lag),
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
                level=str(levels.level) if levels.level else None,
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
        alerts = watch.alerts()
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
        now = clock()
        rows = [
            PlayerConnection(
                player=conn.player_id,
                room=hub.room_of(conn.player_id),
                connection=conn.id,
                transport=conn.transport.name,
                connected_seconds=round(now - conn.connected_at, 1),
                outbox_messages=conn.outbox_messages,
                outbox_bytes=conn.outbox_bytes,
            )
            for conn in sorted(hub.connections(), key=lambda conn: conn.connected_at)[:limit]
        ]
        return PlayersReport(total=hub.connection_count(), connections=rows)

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
        connections = hub.connections_of(player_id)
        if not connections:
            raise APIError(404, ErrorCode.NOT_CONNECTED, f"{player_id!r} is not connected here")
        for conn in connections:
            conn.close(CloseCode.DISCONNECTED, "disconnected by an operator")
        logger.warning(
            "admin disconnected a player",
            extra={"remote": remote, "player": player_id, "connections": len(connections)},
        )
        return Disconnected(player=player_id, connections=len(connections))

    @router.get("/monitoring/commands", response_model=CommandsReport, tags=["monitoring"])
    async def commands(
        limit: Annotated[int, Query(ge=1, le=100, description="At most this many ops.")] = 5,
    ) -> CommandsReport:
        """The slowest commands since start: the ops with the highest p99 (estimated from the
        latency histogram of /metrics), with their counts and errors."""
        every = command_stats.snapshot()
        return CommandsReport(
            total=sum(op.count for op in every),
            errors=sum(op.error_count for op in every),
            slowest=[CommandLatency.of(op) for op in command_stats.slowest(limit)],
        )

    @router.get("/monitoring/memory/history", response_model=HistoryReport, tags=["monitoring"])
    async def memory_history(
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
                for point in history.points(window)
            ],
        )

    @router.get("/monitoring/memory/trend", response_model=TrendReport, tags=["monitoring"])
    async def trend(
        window: Annotated[
            float, Query(gt=0, le=86400, description="Seconds back from now.")
        ] = 3600,
    ) -> TrendReport:
        """The slope of memory's floor, how straight it is, and whether it looks like a leak."""
        fitted = history.trend(window)
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
        (still 200) while a configured backplane cannot be reached, or fails (Redis refuses
        its mailbox)."""
        if hub.shedding:
            body = Health(status="shedding", detail="memory pressure: new connections refused")
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "30"})
        if hub.backplane_problem is not None:
            # Still ready: its own players play on, they just cannot reach other nodes (or
            # players who left them).
            body = Health(status="degraded", detail=hub.backplane_problem)
            return JSONResponse(body.model_dump())
        return JSONResponse(Health(status="ready").model_dump())

    return router
