"""Everything factq keeps in Redis, reached through one `Store`.

Each concern has its own class, sharing one client and one set of keys:
job records (`jobs`), the moves of their runs (`runs`), their results
(`results`), their event logs (`events`), each owner's job list (`index`) and
jobs in flight (`in_flight`), Idempotency-Keys (`idempotency`), identical-work
leases (`computations`) and the webhook delivery queue (`webhooks`). Every
change of a job's state is one Lua script (see `factq/state/lua/`); Redis
errors become `BackendUnavailable` at this edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from factq.settings import Settings
from factq.state import lua
from factq.state.admission import InFlightLimit
from factq.state.computations import Computations
from factq.state.connection import backend_errors, connect, text
from factq.state.events import EventLog
from factq.state.idempotency import IdempotencyKeys
from factq.state.index import JobIndex
from factq.state.jobs import JobRecords
from factq.state.keys import Keys
from factq.state.results import Results
from factq.state.runs import Runs
from factq.state.webhook_queue import WebhookQueue


class Store:
    """factq's state in one Redis database, by concern."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self.settings = settings
        self.keys = Keys(settings.namespace, cluster=settings.redis_cluster)
        scripts = lua.register(client)
        self.index = JobIndex(client, self.keys, scripts["owner_index"], settings)
        self.in_flight = InFlightLimit(client, self.keys, settings)
        self.jobs = JobRecords(client, self.keys, scripts, self.index, settings)
        self.runs = Runs(client, self.keys, scripts, settings)
        self.results = Results(client, self.keys)
        self.events = EventLog(client, self.keys, self.jobs, settings)
        self.webhooks = WebhookQueue(client, self.keys, scripts["webhook_log"])
        self.computations = Computations(client, self.keys, scripts["computation"])
        self.idempotency = IdempotencyKeys(client, self.keys, settings, scripts["idempotency"])

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Store]:
        """A store with its own connection pool, closed on exit."""
        client = connect(settings)
        try:
            yield cls(client, settings)
        finally:
            await client.aclose()

    @backend_errors
    async def ping(self) -> None:
        await self._redis.ping()

    async def durability_warnings(self) -> list[str]:
        """What in Redis's configuration could lose acknowledged work (empty when
        it cannot be read, as on managed services that disable CONFIG)."""
        try:
            config: dict[Any, Any] = await self._redis.config_get("appendonly")
            config |= await self._redis.config_get("maxmemory-policy")
        except RedisError:
            return []
        values = {text(name): text(value) for name, value in config.items()}
        warnings = []
        if values.get("appendonly") != "yes":
            warnings.append(
                "Redis runs without AOF (appendonly no): a restart loses jobs and results "
                "acknowledged since the last snapshot; set appendonly yes"
            )
        if values.get("maxmemory-policy", "noeviction") != "noeviction":
            warnings.append(
                f"Redis may evict keys (maxmemory-policy {values['maxmemory-policy']}): "
                "jobs could vanish under memory pressure; set maxmemory-policy noeviction"
            )
        return warnings
