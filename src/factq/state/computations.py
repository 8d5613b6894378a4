"""Identical deterministic work, done once.

A deterministic task gives the same output for the same input, so factq
computes each (task, input) once: jobs that run at the same time share one
computation through a lease in Redis, held by the job computing it (the
others wait for its outcome), and a later job reuses the stored outcome for
`FACTQ_RESULT_CACHE_TTL_S`. Each job still has its own message, state,
events and copy of the result: sharing never couples their fates, so a
cancel, a lost worker or a deleted job affects no other job.

Copying another job's result touches that job's keys as well: on Redis
Cluster the two jobs' keys would have to share a slot, which they do not;
sharing is for a single Redis (or its replicas), as factq runs today.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from factq.state.connection import backend_errors, text
from factq.state.keys import Keys

# How long a job's lease on a computation lasts unless renewed: a worker that
# dies mid-computation frees it this long after, for another job to take up.
LEASE_MS = 10_000
RENEW_EVERY_S = 3.0
# How long a failure is shared: with the jobs waiting on it now, not later ones.
FAILURE_TTL_S = 30


def input_digest(task: str, job_input: dict[str, Any], version: str = "") -> str:
    """What makes two jobs the same computation: the task (in its version) and its
    canonical input."""
    canonical = json.dumps([task, version, job_input], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Computation:
    """One task on one input, as the keys of its lease and stored outcome."""

    task: str
    digest: str
    lease_key: str
    outcome_key: str


class Computations:
    """The leases and stored outcomes of deterministic computations."""

    def __init__(self, client: redis.Redis, keys: Keys, lease_script: AsyncScript) -> None:
        self._redis = client
        self._keys = keys
        self._lease = lease_script

    def of(self, task: str, job_input: dict[str, Any], version: str = "") -> Computation:
        digest = input_digest(task, job_input, version)
        return Computation(
            task, digest, self._keys.computing(task, digest), self._keys.cached(task, digest)
        )

    @backend_errors
    async def outcome(self, computation: Computation) -> str | None:
        """The id of a finished job whose outcome answers this computation, if any."""
        job_id = await self._redis.get(computation.outcome_key)
        return text(job_id) if job_id is not None else None

    @backend_errors
    async def outcomes(self, computations: list[Computation]) -> list[str | None]:
        """`outcome` of each computation, in one command."""
        found = await self._redis.mget([computation.outcome_key for computation in computations])
        return [text(job_id) if job_id is not None else None for job_id in found]

    @backend_errors
    async def remember(
        self, computation: Computation, job_id: str, ttl_s: int, *, succeeded: bool
    ) -> None:
        """This finished job answers the computation for ttl_s seconds. A failure
        never replaces a stored outcome (a second run that failed, say timed out
        under load, must not hide a success); a success replaces a failure."""
        await self._redis.set(computation.outcome_key, job_id, ex=ttl_s, nx=not succeeded)

    @backend_errors
    async def claim(self, computation: Computation, job_id: str) -> str:
        """Take the lease for job_id if it is free: the id of the job holding it."""
        return text(
            await self._lease(keys=[computation.lease_key], args=["claim", job_id, LEASE_MS])
        )

    @backend_errors
    async def renew(self, computation: Computation, job_id: str) -> bool:
        """Extend job_id's lease: False when it no longer holds it."""
        return bool(
            await self._lease(keys=[computation.lease_key], args=["renew", job_id, LEASE_MS])
        )

    @backend_errors
    async def release(self, computation: Computation, job_id: str) -> None:
        """Free job_id's lease, if it still holds it."""
        await self._lease(keys=[computation.lease_key], args=["release", job_id, LEASE_MS])
