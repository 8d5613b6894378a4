"""Job results: stored by the finish script, read back in chunks, and received
in parts by the update route before they are moved in place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Final

import redis.asyncio as redis
from redis.exceptions import RedisError

from factq.errors import BackendUnavailable
from factq.state.connection import backend_errors
from factq.state.keys import Keys

RESULT_CHUNK_BYTES: Final = 512 * 1024
# How long a result being received lives, should its request never finish.
UPLOAD_TTL_S: Final = 300


class Results:
    """Each job's results, one string per format."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    @backend_errors
    async def size(self, job_id: str, fmt: str) -> int:
        size: int = await self._redis.strlen(self._keys.result(job_id, fmt))
        return size

    async def chunks(
        self, job_id: str, fmt: str, size: int, chunk_bytes: int = RESULT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The stored result in chunks, so that no process holds it whole."""
        key = self._keys.result(job_id, fmt)
        for start in range(0, size, chunk_bytes):
            try:
                chunk = await self._redis.getrange(key, start, start + chunk_bytes - 1)
            except RedisError as exc:
                raise BackendUnavailable("Redis is unavailable") from exc
            if not chunk:
                return
            yield chunk if isinstance(chunk, bytes) else chunk.encode()

    @backend_errors
    async def append_upload(self, key: str, data: bytes) -> None:
        """Add to a result being received; it lives UPLOAD_TTL_S unless moved."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.append(key, data)
            pipe.expire(key, UPLOAD_TTL_S)
            await pipe.execute()

    @backend_errors
    async def drop_uploads(self, keys: Sequence[str]) -> None:
        if keys:
            await self._redis.unlink(*keys)
