"""Job submissions per key (or per client address when keys are off), shared by
every API process through Redis, with the `limits` library."""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

import redis.asyncio as redis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from starlette.requests import Request

from factq.errors import BackendUnavailable, RateLimited
from factq.settings import Settings
from factq.state.connection import cluster_nodes, connection_pool
from factq.state.store import Store

LIMITER_CONNECTIONS = 20


class SubmissionLimiter:
    """`FACTQ_RATE_LIMIT`, e.g. `600/minute`; a batch counts each of its jobs."""

    def __init__(self, settings: Settings) -> None:
        self._item: RateLimitItem | None = (
            parse(settings.rate_limit) if settings.rate_limit else None
        )
        # A fixed window: one counter per key and window, so a batch of a
        # thousand jobs costs one command, not a thousand.
        self._limiter: FixedWindowRateLimiter | None = None
        self._pool: redis.BlockingConnectionPool | None = None
        self._cluster: RedisClusterStorage | None = None
        if self._item is not None and settings.redis_cluster:
            self._cluster = _cluster_storage(settings)
            self._limiter = FixedWindowRateLimiter(self._cluster)
        elif self._item is not None:
            url = settings.redis_url.get_secret_value()
            # Our own pool, so that it is closed with the API.
            self._pool = connection_pool(settings, max_connections=LIMITER_CONNECTIONS)
            storage = RedisStorage(
                "async+" + url,
                implementation="redispy",
                key_prefix=f"{settings.namespace}:limits",
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._limiter = FixedWindowRateLimiter(storage)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._cluster is not None:
            # limits gives no way to close its cluster client: closed where it keeps it.
            client = getattr(self._cluster.bridge, "storage", None)
            if client is not None:
                await client.aclose()

    async def admit(self, who: str, jobs: int) -> None:
        """Count `jobs` submissions for `who`, or raise `RateLimited` (nothing counted)."""
        if self._limiter is None or self._item is None:
            return
        try:
            # Test first: a refused hit would still count against the window.
            if await self._limiter.test(self._item, who, cost=jobs) and await self._limiter.hit(
                self._item, who, cost=jobs
            ):
                return
            stats = await self._limiter.get_window_stats(self._item, who)
        except StorageError as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        retry_after_s = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"over the limit of {self._item} job submissions; retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )


async def admit(
    request: Request, limiter: SubmissionLimiter, store: Store, owner: str, jobs: int
) -> None:
    """Apply the submission rate (per key, or per client address when keys are off)
    and the cap on each key's jobs in flight; 429 when over either."""
    client = request.client.host if request.client else "unknown"
    await limiter.admit(owner or f"address:{client}", jobs)
    await store.in_flight.admit(owner, jobs)


def _cluster_storage(settings: Settings) -> RedisClusterStorage:
    """The counters on a Redis Cluster: each key's in its own slot."""
    url = settings.redis_url.get_secret_value()
    nodes = ",".join(f"{host}:{port}" for host, port in cluster_nodes(url))
    first = urlsplit(url.split(",")[0].strip())
    credentials = f"{first.username or ''}:{first.password}@" if first.password else ""
    tls: dict[str, bool] = {"ssl": True} if first.scheme == "rediss" else {}
    return RedisClusterStorage(
        f"async+redis+cluster://{credentials}{nodes}",
        implementation="redispy",
        key_prefix=f"{settings.namespace}:limits",
        wrap_exceptions=True,
        **tls,
    )
