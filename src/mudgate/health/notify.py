"""Webhook notifications of alerts that start and resolve: from a bounded queue, in the
background, with a cool-down and retries."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable

import httpx

from ..bounded import BoundedQueue, TTLMap
from ..settings import Settings
from ..tasks import BackgroundTask
from .alerts import Alert

__all__ = ["Notifier"]

logger = logging.getLogger("mudgate.alerts")


class Notifier:
    """Sends alert notifications to webhooks, in the background, from a bounded queue.

    Each alert's start and resolution is one JSON POST to every URL in ``alert_webhooks``
    (with a ``text`` field, so a Slack incoming webhook shows it). An alert that starts again
    within ``alert_cooldown`` of its last notification is not sent again, nor is its
    resolution. A POST that fails is retried with backoff; a queue that fills drops its oldest
    notification. Nothing here can slow a player down or grow without bound.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        retry_delay_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.urls = list(settings.alert_webhooks)
        self._clock = clock
        self._wall_clock = wall_clock
        self._retry_delay = retry_delay_seconds
        self._queue: BoundedQueue[dict[str, object]] = BoundedQueue(settings.webhook_queue_size)
        self._wakeup = asyncio.Event()
        # Alert key -> when its start was last notified; bounded like everything else.
        self._notified: TTLMap[str, float] = TTLMap(1000)
        # The alerts active now whose start was notified: only theirs is a resolution to send.
        self._announced: TTLMap[str, bool] = TTLMap(1000)
        self._task = BackgroundTask("mudgate-notifier")
        self.sent = 0
        self.failed = 0

    @property
    def dropped(self) -> int:
        return self._queue.evictions

    def notify(self, started: list[Alert], resolved: list[Alert]) -> None:
        """Queue notifications for alerts that started or resolved; never waits."""
        if not self.urls:
            return
        now = self._clock()
        for alert in started:
            last = self._notified.get(alert.key)
            if last is not None and now - last < self.settings.alert_cooldown:
                continue
            self._notified.set(alert.key, now)
            self._announced.set(alert.key, True)
            self._queue.append(self._payload(alert, "firing"))
        for alert in resolved:
            # A start that the cool-down kept quiet resolves quietly too.
            if self._announced.pop(alert.key):
                self._queue.append(self._payload(alert, "resolved"))
        if len(self._queue):
            self._wakeup.set()

    def _payload(self, alert: Alert, status: str) -> dict[str, object]:
        node = self.settings.node_name
        stamp = datetime.datetime.fromtimestamp(self._wall_clock(), datetime.UTC).isoformat()
        return {
            "status": status,
            "level": str(alert.level),
            "code": alert.code,
            "message": alert.message,
            "value": alert.value,
            "threshold": alert.threshold,
            "node": node,
            "timestamp": stamp,
            "text": f"[mudgate {node}] {alert} ({status})",
        }

    def start(self) -> None:
        if self.urls:
            self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                for payload in self._queue.drain():
                    for url in self.urls:
                        await self._post(client, url, payload)

    async def _post(self, client: httpx.AsyncClient, url: str, payload: dict[str, object]) -> None:
        for attempt in range(self.settings.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
            try:
                response = await client.post(url, json=payload)
            except httpx.HTTPError as error:
                problem = repr(error)
            else:
                if response.is_success:
                    self.sent += 1
                    return
                problem = f"HTTP {response.status_code}"
            logger.warning("webhook %s failed (attempt %d): %s", url, attempt + 1, problem)
        self.failed += 1
