"""Admission control: at most FACTQ_MAX_IN_FLIGHT_PER_KEY queued or running jobs
per owner, counted in a set per owner that `JobIndex.add` fills."""

from __future__ import annotations

from typing import Final

import redis.asyncio as redis

from factq.errors import RateLimited
from factq.settings import Settings
from factq.state.connection import backend_errors, text
from factq.state.keys import Keys

IN_FLIGHT_RETRY_S: Final = 1
# Statuses (and a vanished job) that no longer count as in flight.
_NOT_IN_FLIGHT: Final = {None, b"succeeded", b"failed", b"cancelled"}


class InFlightLimit:
    """Refuses an owner's submission that would put it over its jobs in flight."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis = client
        self._keys = keys
        self._max_in_flight = settings.max_in_flight_per_key

    @backend_errors
    async def admit(self, owner: str, jobs: int) -> None:
        """`RateLimited` when `jobs` more would be over the limit (0: no limit)."""
        if not self._max_in_flight:
            return
        key = self._keys.owner_active(owner)
        if await self._redis.scard(key) + jobs <= self._max_in_flight:
            return
        # Finished jobs leave the set only here, when it looks full.
        members = [text(member) for member in await self._redis.smembers(key)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in members:
                pipe.hget(self._keys.job(job_id), "status")
            statuses = await pipe.execute()
        done = [m for m, s in zip(members, statuses, strict=True) if s in _NOT_IN_FLIGHT]
        if done:
            await self._redis.srem(key, *done)
        in_flight = len(members) - len(done)
        if in_flight + jobs > self._max_in_flight:
            raise RateLimited(
                f"{in_flight} jobs in flight; at most {self._max_in_flight} per key",
                retry_after_s=IN_FLIGHT_RETRY_S,
            )
