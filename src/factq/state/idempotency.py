"""Idempotency-Keys: which job a client's key made, for which request.

A request claims its key before it stores its job, and the job is stored
only while the key still holds that claim; a retry with the same key and
request gets the job the claim names. A claim whose request failed before
making its job (Redis or RabbitMQ went away, and the claim could not be
freed) is taken over once it is stale, so the key can still make its job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from factq.errors import IdempotencyConflict
from factq.settings import Settings
from factq.state import lua
from factq.state.connection import backend_errors, text
from factq.state.keys import Keys
from factq.state.records import Outcome


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What an Idempotency-Key holds: the request it was first used with
    (`fingerprint`), the job id reserved for it, how long ago (server clock),
    and whether the request at hand just claimed it (`ours`)."""

    record: str
    value: str
    fingerprint: str
    job_id: str
    age_s: float
    ours: bool

    @classmethod
    def parse(cls, record: str, value: str, now: float, *, ours: bool) -> KeyClaim:
        fingerprint, _, rest = value.partition(":")
        job_id, _, claimed_at = rest.partition(":")
        try:
            age_s = max(0.0, now - float(claimed_at))
        except ValueError:
            age_s = float("inf")
        return cls(record, value, fingerprint, job_id, age_s, ours)


class IdempotencyKeys:
    """The Idempotency-Keys of every owner, each kept for `ttl_s`."""

    def __init__(
        self, client: redis.Redis, keys: Keys, settings: Settings, script: AsyncScript
    ) -> None:
        self._keys = keys
        self._ttl_s = settings.result_ttl_s
        self._script = script
        self._pipeliner = lua.Pipeliner(client, settings.redis_min_replicas)

    async def _call(self, record: str, args: list[Any]) -> Any:
        [reply] = await self._pipeliner.run([(self._script, [record], args)])
        return reply

    def record(self, owner: str, key: str) -> str:
        return self._keys.idempotency(owner, hashlib.sha256(key.encode()).hexdigest())

    @backend_errors
    async def claim(self, owner: str, key: str, fingerprint: str, job_id: str) -> KeyClaim:
        """The key, reserved now for job_id (`ours`), or as an earlier request with
        the same fingerprint left it; `IdempotencyConflict` for another request."""
        record = self.record(owner, key)
        reply = await self._call(record, ["claim", fingerprint, job_id, self._ttl_s])
        claim = _parse(record, reply)
        if claim.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request; use a new key"
            )
        return claim

    @backend_errors
    async def take_over(self, dead: KeyClaim, job_id: str) -> KeyClaim | None:
        """Reserve the key again, for job_id, unless it changed since `dead` was read."""
        reply = await self._call(
            dead.record, ["take_over", dead.value, dead.fingerprint, job_id, self._ttl_s]
        )
        claim = _parse(dead.record, reply)
        return claim if claim.ours else None

    @backend_errors
    async def release(self, claim: KeyClaim) -> None:
        """Free the key our request claimed, unless another request took it over."""
        await self._call(claim.record, ["release", claim.value])


def _parse(record: str, reply: list[bytes]) -> KeyClaim:
    outcome, value, now = (text(part) for part in reply)
    return KeyClaim.parse(record, value, float(now), ours=outcome == Outcome.CLAIMED)
