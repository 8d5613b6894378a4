"""Each task queue's depth and consumers for `GET /metrics`, asked of RabbitMQ at
scrape time, at most once every few seconds."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final

from prometheus_client.core import GaugeMetricFamily

from factq.broker import Broker, QueueStats
from factq.errors import BackendUnavailable

logger = logging.getLogger(__name__)

# A scrape within this long of the last one that asked RabbitMQ answers with
# the same depths: a storm of scrapes costs RabbitMQ one question per interval.
QUEUE_STATS_CACHE_S: Final = 5.0
QUEUE_STATS_TIMEOUT_S: Final = 3.0


class QueueGauges:
    """Each task queue's depth and consumers, as RabbitMQ last told them; one per
    API process. Scrapes that arrive together share one question."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._stats: dict[str, QueueStats] | None = None
        self._asked_at = -math.inf
        self._asking = asyncio.Lock()

    async def current(self) -> dict[str, QueueStats] | None:
        """The stats, at most QUEUE_STATS_CACHE_S old; None while RabbitMQ does not answer."""
        async with self._asking:
            now = asyncio.get_running_loop().time()
            if now - self._asked_at >= QUEUE_STATS_CACHE_S:
                try:
                    self._stats = await asyncio.wait_for(
                        self._broker.all_queue_stats(), QUEUE_STATS_TIMEOUT_S
                    )
                except (BackendUnavailable, TimeoutError) as exc:
                    logger.debug("queue depths not read: %s", exc)
                    self._stats = None
                self._asked_at = now
            return self._stats

    async def families(self) -> list[GaugeMetricFamily]:
        """The gauges read now (none while RabbitMQ does not answer)."""
        stats = await self.current()
        if stats is None:
            return []
        depth = GaugeMetricFamily(
            "factq_queue_depth", "Jobs waiting in each task's queue (RabbitMQ).", labels=["task"]
        )
        consumers = GaugeMetricFamily(
            "factq_queue_consumers", "Consumers (workers) of each task's queue.", labels=["task"]
        )
        for task, queue in sorted(stats.items()):
            depth.add_metric([task], queue.depth)
            consumers.add_metric([task], queue.consumers)
        return [depth, consumers]
