"""Where redis-py meets factq: its errors become ours, its replies become text."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from factq.errors import BackendUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def backend_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn redis-py's connection errors into `BackendUnavailable`."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        except ResponseError as exc:
            # Out of memory (noeviction) or a read-only replica after a
            # failover: Redis is up but cannot take writes, for now.
            if str(exc).startswith(("OOM", "READONLY")):
                raise BackendUnavailable(f"Redis cannot write: {str(exc)[:80]}") from exc
            raise

    return wrapper


def flat_fields(flat: Sequence[bytes]) -> dict[str, str]:
    """A hash as HGETALL returns it inside a script: a flat list of keys and values."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
