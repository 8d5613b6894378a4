"""Where redis-py meets factq: every Redis client is built here, with the same
timeouts; its errors become ours, and its replies become text."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.cluster
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.driver_info import DriverInfo
from redis.exceptions import (
    AskError,
    ClusterError,
    MaxConnectionsError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from factq.errors import BackendUnavailable, Overloaded
from factq.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

CONNECT_TIMEOUT_S: Final = 5.0
# A command that has not answered in this long is answered as Redis unavailable.
READ_TIMEOUT_S: Final = 30.0
HEALTH_CHECK_S: Final = 15
# How long a command waits for a free connection when all are in use.
POOL_WAIT_S: Final = 10.0
# Given to every connection: without it, redis-py looks its own version up in
# the installed packages' metadata for each new connection (a file read and an
# email-header parse; 16 % of the API's samples while 1,000 followers connected).
DRIVER: Final = DriverInfo(lib_version=redis.__version__)


def connection_pool(settings: Settings, max_connections: int) -> aioredis.BlockingConnectionPool:
    """A bounded pool that makes a command wait for a free connection, rather
    than fail, when many arrive at once."""
    return aioredis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
        # With maintenance notifications on ("auto" under RESP3), redis-py
        # skips its closed-socket check when it hands out a connection, so
        # after a Redis restart every pooled connection would fail once.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        driver_info=DRIVER,
    )


def connect(settings: Settings, max_connections: int | None = None) -> aioredis.Redis:
    """A client over its own pool (FACTQ_REDIS_MAX_CONNECTIONS connections unless
    told), closed with `aclose()`; on a cluster, a cluster client with as many
    connections to each node."""
    size = max_connections or settings.redis_max_connections
    if settings.redis_cluster:
        return connect_cluster(settings, size)
    return aioredis.Redis.from_pool(connection_pool(settings, size))


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The nodes a URL names (FACTQ_REDIS_URL: one URL, or several
    comma-separated): where a cluster client first looks for the layout."""
    parts = [urlsplit(each.strip()) for each in url.split(",")]
    return [(part.hostname or "127.0.0.1", part.port or 6379) for part in parts]


def _credentials(url: str) -> dict[str, Any]:
    """The user, password and TLS of the first URL: every node of a cluster shares them."""
    first = urlsplit(url.split(",")[0].strip())
    return {
        "username": unquote(first.username) if first.username else None,
        "password": unquote(first.password) if first.password else None,
        "ssl": first.scheme == "rediss",
    }


def connect_cluster(settings: Settings, max_connections: int) -> aioredis.Redis:
    """A Redis Cluster client: it finds the masters from the URL's nodes, routes
    each command to its slot's master and follows failovers and moved slots.
    Typed as a plain client: factq uses the commands both share."""
    url = settings.redis_url.get_secret_value()
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        max_connections=max_connections,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        driver_info=DRIVER,
        **_credentials(url),
    )
    return cast(aioredis.Redis, client)


def node_client(settings: Settings, host: str, port: int) -> aioredis.Redis:
    """A client of one node of the cluster, for a subscription there: no read
    timeout, as for `connect_listener`."""
    return aioredis.Redis(
        host=host,
        port=port,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        driver_info=DRIVER,
        **_credentials(settings.redis_url.get_secret_value()),
    )


def connect_listener(settings: Settings) -> aioredis.Redis:
    """A client for one pub/sub subscription: no read timeout, since a quiet
    channel is not a dead one (its reader pings to find a dead one)."""
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        driver_info=DRIVER,
    )


def connect_blocking(
    url: str, timeout_s: float = READ_TIMEOUT_S, *, cluster: bool = False
) -> redis.Redis:
    """A synchronous client, for a pool process (which has no event loop); of
    the cluster whose nodes `url` names, with `cluster`."""
    if cluster:
        sync = redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(*node)  # type: ignore[no-untyped-call]
                for node in cluster_nodes(url)
            ],
            **_credentials(url),
            socket_connect_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
            socket_timeout=timeout_s,
        )
        return cast(redis.Redis, sync)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
        socket_timeout=timeout_s,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        driver_info=DRIVER,
    )


def backend_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn redis-py's connection errors into `BackendUnavailable`."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (ClusterError, RedisClusterException, TryAgainError, AskError) as exc:
            # A cluster without a master for a slot, or moving it: a failover.
            raise BackendUnavailable(f"Redis Cluster is unavailable: {str(exc)[:80]}") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if is_pool_exhausted(exc):
                raise Overloaded(
                    f"Redis is busy: no free connection within {POOL_WAIT_S:g} s; retry"
                ) from exc
            _count_connection_error()
            raise BackendUnavailable("Redis is unavailable") from exc
        except ResponseError as exc:
            # Out of memory (noeviction) or a read-only replica after a
            # failover: Redis is up but cannot take writes, for now.
            if str(exc).startswith(("OOM", "READONLY")):
                raise BackendUnavailable(f"Redis cannot write: {str(exc)[:80]}") from exc
            raise

    return wrapper


def _count_connection_error() -> None:
    # Imported here: a pool process imports this module (for progress
    # reports), and needs no metrics library.
    from factq import metrics

    metrics.REDIS_CONNECTION_ERRORS.inc()


def is_pool_exhausted(exc: BaseException) -> bool:
    """redis-py's blocking pool waited POOL_WAIT_S for a connection in vain: the
    process is busy, not Redis down."""
    if isinstance(exc, MaxConnectionsError):
        return True  # a cluster client's connections to one node
    return (
        isinstance(exc, RedisConnectionError)
        and isinstance(exc.__cause__, TimeoutError)
        and "No connection available" in str(exc)
    )


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
