"""Each owner's jobs, newest first: a sorted set per owner, read a page at a time."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from factq.schema import Job, JobStatus
from factq.settings import Settings
from factq.state.connection import backend_errors, text
from factq.state.keys import Keys
from factq.state.lua import Call
from factq.state.records import job_from_fields

# Each owner's job list covers at most this many of its newest jobs.
OWNER_INDEX_MAX = 100_000
# A filtered listing reads at most this many index entries per job it returns.
LIST_SCAN_FACTOR = 10


class JobIndex:
    """Job ids by owner, scored by a per-owner counter: unique, in submission order."""

    def __init__(
        self, client: redis.Redis, keys: Keys, script: AsyncScript, settings: Settings
    ) -> None:
        self._redis = client
        self._keys = keys
        self._script = script
        # The index outlives its newest job's result; entries whose job is
        # gone are dropped as they are read.
        self._keep_s = 2 * settings.result_ttl_s
        self._track_in_flight = bool(settings.max_in_flight_per_key)

    def add_call(self, owner: str, job_ids: Sequence[str]) -> Call:
        """The script call that indexes jobs, for a pipeline that makes them first
        (a listing drops entries whose job it cannot find)."""
        keys = [
            self._keys.owner_jobs(owner),
            self._keys.owner_counter(owner),
            self._keys.owner_active(owner),
        ]
        flags = [self._keep_s, OWNER_INDEX_MAX, int(self._track_in_flight)]
        return self._script, keys, [*flags, *job_ids]

    @backend_errors
    async def page(
        self, owner: str, *, status: JobStatus | None, limit: int, cursor: int | None
    ) -> tuple[list[Job], int | None]:
        """The owner's jobs, newest first, after `cursor`; and the cursor of the next page."""
        index = self._keys.owner_jobs(owner)
        upper = f"({cursor}" if cursor is not None else "+inf"
        found: list[Job] = []
        budget = limit * LIST_SCAN_FACTOR
        while budget > 0 and len(found) < limit:
            entries: list[tuple[bytes, float]] = await self._redis.zrevrangebyscore(  # type: ignore[assignment]
                index, upper, "-inf", start=0, num=min(budget, 200), withscores=True
            )
            if not entries:
                return found, None
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id, _ in entries:
                    pipe.hgetall(self._keys.job(text(job_id)))
                hashes = await pipe.execute()
            stale = []
            for (job_id, score), raw in zip(entries, hashes, strict=True):
                budget -= 1
                upper = f"({int(score)}"
                if not raw:
                    stale.append(job_id)
                    continue
                job = job_from_fields({text(k): text(v) for k, v in raw.items()})
                if status is None or job.status is status:
                    found.append(job)
                if len(found) == limit:
                    break
            if stale:
                await self._redis.zrem(index, *stale)
        return found, int(upper[1:])
