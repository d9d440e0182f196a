"""Prometheus metrics, collected at scrape time from what the parts already count.

Nothing here runs on a player's message path: every figure is read when ``/metrics`` is
scraped. Names follow Prometheus conventions: ``mudgate_`` prefix, ``_total`` on counters,
units (``_bytes``, ``_seconds``) in the name.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..cleanup import Janitor
from ..command_stats import BUCKETS_SECONDS, CommandStats
from ..game import GameLink
from ..health.alerts import AlertTracker
from ..health.lag import LoopLag
from ..health.levels import MemoryLevels
from ..health.notify import Notifier
from ..hub import Hub, HubStats
from ..memory.monitor import MemoryMonitor
from ..server.sockets import SocketTable
from ..server.telnet import TelnetListener, TelnetStats

__all__ = ["GatewayCollector", "metrics_registry"]


class GatewayCollector(Collector):
    """Reads the parts it is given at every scrape; changes none of them."""

    def __init__(
        self,
        *,
        hub: Hub,
        monitor: MemoryMonitor,
        levels: MemoryLevels,
        tracker: AlertTracker,
        notifier: Notifier,
        lag: LoopLag,
        janitor: Janitor,
        sockets: SocketTable,
        command_stats: CommandStats,
        game_link: GameLink | None = None,
        telnet: TelnetListener | None = None,
    ) -> None:
        self.hub = hub
        self.monitor = monitor
        self.levels = levels
        self.tracker = tracker
        self.notifier = notifier
        self.lag = lag
        self.janitor = janitor
        self.sockets = sockets
        self.command_stats = command_stats
        self.game_link = game_link
        self.telnet = telnet

    def collect(self) -> Iterator[Metric]:
        stats = self.hub.stats()
        yield from self._structures(stats)
        yield from self._sockets()
        yield from self._memory()
        yield from self._lag()
        yield from self._cleanups()
        yield from self._counters(stats)
        yield from self._commands()
        yield from self._backplane(stats)
        if self.game_link is not None:
            yield from self._game(self.game_link)
        if self.telnet is not None:
            yield from self._telnet(self.telnet.stats())

    def _structures(self, stats: HubStats) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "mudgate_connections", "Open connections by transport.", labels=["transport"]
        )
        connections.add_metric(["websocket"], stats.active_websockets)
        connections.add_metric(["sse"], stats.active_sse)
        connections.add_metric(["telnet"], stats.active_telnet)
        yield connections

        entries = GaugeMetricFamily(
            "mudgate_structure_entries", "Entries in each hub structure.", labels=["structure"]
        )
        for name, size in stats.structures().items():
            entries.add_metric([name], size)
        yield entries
        yield GaugeMetricFamily(
            "mudgate_pending_message_bytes",
            "Bytes of messages queued for offline players.",
            value=stats.pending_message_bytes,
        )
        yield CounterMetricFamily(
            "mudgate_pending_messages_refused",
            "Messages for offline players refused at a cap (per player, per sender, bytes).",
            value=stats.pending_messages_refused,
        )
        yield GaugeMetricFamily(
            "mudgate_commands_in_flight",
            "POST /commands under way (body arriving, or being handled).",
            value=stats.commands_in_flight,
        )
        yield CounterMetricFamily(
            "mudgate_commands_refused",
            "POST /commands refused at a cap of commands under way (per player, per address).",
            value=stats.commands_refused,
        )
        yield GaugeMetricFamily(
            "mudgate_outbox_bytes", "Bytes queued in all outboxes.", value=stats.outbox_bytes
        )
        yield GaugeMetricFamily(
            "mudgate_room_history_entries",
            "Room and channel events kept in this process for players who reconnect.",
            value=stats.room_history_entries,
        )
        yield GaugeMetricFamily(
            "mudgate_room_history_bytes",
            "Bytes of room and channel events kept in this process, with their overhead.",
            value=stats.room_history_bytes,
        )
        yield CounterMetricFamily(
            "mudgate_room_history_evicted",
            "Room and channel events let go before their time, at a cap.",
            value=stats.room_history_evicted,
        )
        resumes = CounterMetricFamily(
            "mudgate_resumes",
            "Rooms and channels players asked to resume, by whether all they missed came back.",
            labels=["recovered"],
        )
        resumes.add_metric(["true"], stats.resumes_recovered)
        resumes.add_metric(["false"], stats.resumes_not_recovered)
        yield resumes
        yield CounterMetricFamily(
            "mudgate_events_replayed",
            "Events sent again to players who resumed.",
            value=stats.events_replayed,
        )

    def _sockets(self) -> Iterator[Metric]:
        stats = self.sockets.stats()
        sockets = GaugeMetricFamily(
            "mudgate_sockets",
            "Open TCP connections, by what they are doing (waiting, receiving, http, websocket).",
            labels=["kind"],
        )
        for kind, count in stats.by_kind.items():
            sockets.add_metric([kind], count)
        yield sockets
        yield GaugeMetricFamily(
            "mudgate_sockets_capacity",
            "MUDGATE_MAX_SOCKETS as fitted to the file descriptor limit.",
            value=stats.capacity,
        )
        yield GaugeMetricFamily(
            "mudgate_compressed_connections",
            "WebSockets with compression negotiated (zlib state each).",
            value=stats.compressed,
        )
        yield GaugeMetricFamily(
            "mudgate_compressed_connections_capacity",
            "MUDGATE_MAX_COMPRESSED_CONNECTIONS.",
            value=stats.compressed_capacity,
        )
        events = CounterMetricFamily(
            "mudgate_socket_events",
            "Connections the protocol layer refused, evicted, timed out or closed for abuse.",
            labels=["event"],
        )
        for event, count in stats.events.items():
            events.add_metric([event], count)
        yield events

    def _memory(self) -> Iterator[Metric]:
        monitor = self.monitor
        sample = monitor.last or monitor.read(record=False)
        yield GaugeMetricFamily(
            "mudgate_memory_percent", "Memory use over the effective limit, 0-100.", sample.percent
        )
        limit = GaugeMetricFamily(
            "mudgate_memory_limit_bytes", "The effective memory limit.", labels=["source"]
        )
        limit.add_metric([sample.limit_source], sample.limit_bytes)
        yield limit
        yield GaugeMetricFamily(
            "mudgate_memory_used_bytes",
            "What percent is computed from: RSS, or the cgroup working set when larger.",
            value=sample.used_bytes,
        )
        level = self.levels.level
        yield GaugeMetricFamily(
            "mudgate_memory_level",
            "Memory alert level in force: 0 none, 1 info, 2 warning, 3 critical.",
            value=int(level) if level is not None else 0,
        )
        yield GaugeMetricFamily(
            "mudgate_shedding",
            "1 while new connections are refused.",
            value=int(self.hub.shedding),
        )

    def _lag(self) -> Iterator[Metric]:
        lag = self.lag
        yield HistogramMetricFamily(
            "mudgate_event_loop_lag_seconds",
            "How late the event loop woke, measured every 100 ms: a command or hook that "
            "blocks it makes every player wait.",
            buckets=[
                ("+Inf" if bound == float("inf") else repr(bound), count)
                for bound, count in lag.buckets.items()
            ],
            sum_value=lag.sum_seconds,
        )
        yield GaugeMetricFamily(
            "mudgate_event_loop_lag_recent_max_seconds",
            "The worst event-loop lag of the last minute.",
            value=lag.recent_max(),
        )

    def _cleanups(self) -> Iterator[Metric]:
        cleanups = CounterMetricFamily(
            "mudgate_cleanups", "Cleanups run, by trigger.", labels=["trigger"]
        )
        cleanup_stats = self.janitor.stats
        cleanups.add_metric(["time"], cleanup_stats.time_cleanups)
        cleanups.add_metric(["memory"], cleanup_stats.memory_cleanups)
        cleanups.add_metric(["forced"], cleanup_stats.forced_cleanups)
        yield cleanups
        removed = CounterMetricFamily(
            "mudgate_cleanup_removed_entries",
            "Entries removed by cleanups, by structure.",
            labels=["structure"],
        )
        for name, count in sorted(cleanup_stats.removed.items()):
            removed.add_metric([name], count)
        yield removed
        buckets = [
            ("+Inf" if bound == float("inf") else repr(bound), count)
            for bound, count in cleanup_stats.duration_buckets.items()
        ]
        yield HistogramMetricFamily(
            "mudgate_cleanup_duration_seconds",
            "How long cleanups took.",
            buckets=buckets,
            sum_value=cleanup_stats.duration_sum_seconds,
        )

    def _counters(self, stats: HubStats) -> Iterator[Metric]:
        hub = self.hub
        evictions = CounterMetricFamily(
            "mudgate_evictions", "Entries evicted at a cap, by structure.", labels=["structure"]
        )
        expirations = CounterMetricFamily(
            "mudgate_expirations", "Entries expired by TTL, by structure.", labels=["structure"]
        )
        for name, container in hub.container_stats().items():
            evictions.add_metric([name], container.evictions)
            expirations.add_metric([name], container.expirations)
        yield evictions
        yield expirations

        yield CounterMetricFamily(
            "mudgate_connections_opened",
            "Connections opened since start.",
            value=stats.connections_opened,
        )
        yield CounterMetricFamily(
            "mudgate_slow_consumer_disconnects",
            "Connections closed with 4008 because they did not keep up.",
            value=stats.slow_consumer_disconnects,
        )
        refused = CounterMetricFamily(
            "mudgate_refused_connections", "Connections refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(hub.refusals().items()):
            refused.add_metric([str(reason)], count)
        yield refused
        fired = CounterMetricFamily(
            "mudgate_alerts_fired", "Alerts that started, by code.", labels=["code"]
        )
        for code, count in sorted(self.tracker.fired.items()):
            fired.add_metric([code], count)
        yield fired
        notifications = CounterMetricFamily(
            "mudgate_notifications", "Webhook notifications, by outcome.", labels=["outcome"]
        )
        notifier = self.notifier
        notifications.add_metric(["sent"], notifier.sent)
        notifications.add_metric(["failed"], notifier.failed)
        notifications.add_metric(["dropped"], notifier.dropped)
        yield notifications

    def _commands(self) -> Iterator[Metric]:
        """Per op the registry knows; anything else is counted as ``(unknown)``."""
        commands = CounterMetricFamily(
            "mudgate_commands",
            "Commands handled, by op (with their errors; (unknown): an op nobody registered, "
            "or a frame that could not be read).",
            labels=["op"],
        )
        errors = CounterMetricFamily(
            "mudgate_command_errors",
            "Commands answered with an error, by op and error code.",
            labels=["op", "code"],
        )
        durations = HistogramMetricFamily(
            "mudgate_command_duration_seconds",
            "How long commands took, from the frame read to the handler's return, by op.",
            labels=["op"],
        )
        bounds = ["+Inf" if bound == float("inf") else repr(bound) for bound in BUCKETS_SECONDS]
        for op in self.command_stats.snapshot():
            commands.add_metric([op.op], op.count)
            for code, count in sorted(op.errors.items()):
                errors.add_metric([op.op, code], count)
            buckets = list(zip(bounds, op.buckets, strict=True))
            durations.add_metric([op.op], buckets=buckets, sum_value=op.sum_seconds)
        yield commands
        yield errors
        yield durations

    def _backplane(self, hub_stats: HubStats) -> Iterator[Metric]:
        """Only with a Redis backplane: the in-process one has nothing to count."""
        stats = hub_stats.backplane
        if stats is None:
            return
        yield GaugeMetricFamily(
            "mudgate_backplane_up", "1 while Redis can be reached, else 0.", int(stats.up)
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_subscriptions",
            "Redis channels this node listens to.",
            stats.subscriptions,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_queue",
            "Commands waiting to be written to Redis.",
            stats.queue,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_pending_players",
            "Players away with messages waiting for them in Redis (all nodes').",
            stats.pending_players,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_pending_bytes",
            "Bytes of messages waiting in Redis for players who are away (all nodes').",
            stats.pending_bytes,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_order_waiting",
            "This node's messages and replies waiting behind its room events on their way "
            "through Redis.",
            stats.order_waiting,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_history_topics",
            "Rooms and channels whose position Redis keeps (all nodes').",
            stats.history_topics,
        )
        yield GaugeMetricFamily(
            "mudgate_backplane_history_bytes",
            "Bytes of room and channel events Redis keeps (all nodes').",
            stats.history_bytes,
        )
        for name, meaning in (
            ("history_kept", "Room and channel events this node published that Redis numbered."),
            (
                "history_dropped",
                "Room and channel events Redis never numbered: delivered here unkept.",
            ),
            ("published", "Messages published to Redis."),
            ("received", "Messages from other nodes delivered here."),
            ("dropped", "Commands for Redis dropped while it was away or the queue was full."),
            ("reconnects", "Times Redis was reached again after being away."),
            ("invalid", "Records read from Redis that no mudgate node wrote, skipped."),
            (
                "order_unordered",
                "Messages and replies that went out ahead of this node's room events they "
                "waited for (past the cap or the timeout).",
            ),
        ):
            yield CounterMetricFamily(
                f"mudgate_backplane_{name}", meaning, value=getattr(stats, name)
            )

    def _telnet(self, stats: TelnetStats) -> Iterator[Metric]:
        """The telnet listener (``MUDGATE_TELNET_PORT``)."""
        yield GaugeMetricFamily(
            "mudgate_telnet_logging_in",
            "Telnet connections not signed in yet.",
            value=stats.logging_in,
        )
        yield GaugeMetricFamily(
            "mudgate_telnet_compressed",
            "Telnet connections with MCCP2 compression on (at most MUDGATE_TELNET_MAX_COMPRESSED).",
            value=stats.compressed,
        )
        events = CounterMetricFamily(
            "mudgate_telnet_events",
            "What the telnet layer refused or ended, by event.",
            labels=["event"],
        )
        for name, count in stats.events.items():
            events.add_metric([name], count)
        yield events

    def _game(self, link: GameLink) -> Iterator[Metric]:
        """The game in a process of its own (``mudgate serve --game``, or a linked game)."""
        state = link.status()
        yield GaugeMetricFamily(
            "mudgate_game_up",
            "1 while a game answers commands (0: restarting, down, or not attached).",
            value=1 if state["state"] == "ready" else 0,
        )
        yield GaugeMetricFamily(
            "mudgate_game_queued_commands",
            "Commands and events waiting for the game (while it restarts).",
            value=state["queued"],
        )
        yield GaugeMetricFamily(
            "mudgate_game_queued_bytes", "Bytes waiting for the game.", value=state["queued_bytes"]
        )
        yield GaugeMetricFamily(
            "mudgate_game_in_flight_commands",
            "Commands the game is running.",
            value=state["in_flight"],
        )
        for name, key, text in (
            ("restarts", "restarts", "Game processes that took over from another."),
            ("failed_starts", "failed_starts", "Game processes that failed to start."),
            ("commands", "commands", "Commands handed to the game."),
            ("commands_refused", "refused", "Commands refused while the game was away or behind."),
            (
                "commands_unanswered",
                "unanswered",
                "Commands the game stopped while running (answered game_unavailable).",
            ),
            ("events_dropped", "events_dropped", "Events for the game dropped past the queue."),
            (
                "slow_consumer_closes",
                "slow_consumer_closes",
                "Links closed because the game stopped reading.",
            ),
        ):
            yield CounterMetricFamily(f"mudgate_game_{name}", text, value=state[key])


def metrics_registry(collector: GatewayCollector) -> CollectorRegistry:
    """A registry of its own per app (tests build many): the gateway's collector, and the
    process and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(collector)
    return registry
