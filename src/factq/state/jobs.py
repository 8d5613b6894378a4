"""Job records: made (provisional until their message is queued), read, cancelled
and deleted. Each change is one Lua script (see `factq/state/lua/`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from factq.errors import AlreadyFinished, FactqError, IdempotencyConflict, JobNotFound, NotFinished
from factq.logs import redact_url
from factq.schema import Job, WebhookRequest
from factq.settings import Settings
from factq.state import lua
from factq.state.computations import Computation
from factq.state.connection import backend_errors, text
from factq.state.idempotency import KeyClaim
from factq.state.index import JobIndex
from factq.state.keys import Keys
from factq.state.lua import Call
from factq.state.observed import observed
from factq.state.records import NewJob, Outcome, Transition, flat_fields, job_from_fields


def _shown(webhook: WebhookRequest) -> str:
    """A webhook as the job shows it (and its events carry it): its URL redacted."""
    return webhook.model_copy(update={"url": redact_url(webhook.url)}).model_dump_json()


class JobRecords:
    """Each job's hash and event stream, from creation to deletion."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: dict[str, AsyncScript],
        index: JobIndex,
        settings: Settings,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._index = index
        self._settings = settings
        self._pipeliner = lua.Pipeliner(client, settings.redis_min_replicas)

    @property
    def provisional_ttl_s(self) -> int:
        """How long a job lives unconfirmed, before its message is known queued."""
        return self._settings.provisional_ttl_s

    @backend_errors
    async def create(self, jobs: Sequence[NewJob], claim: KeyClaim | None = None) -> list[Job]:
        """Store new queued jobs, with the provisional TTL, and index them by owner;
        with the Idempotency-Key claim made for them, only while it still holds."""
        calls: list[Call] = [
            (
                self._scripts["create"],
                self._keys.job_keys(job.job_id),
                [
                    self._keys.events_channel(job.job_id),
                    self._settings.provisional_ttl_s,
                    job.job_id,
                    job.task,
                    json.dumps(job.input, separators=(",", ":")),
                    job.owner,
                    _shown(job.webhook) if job.webhook else "",
                    self._keys.webhooks(job.job_id) if job.webhook else "",
                    "" if job.deadline_s is None else repr(job.deadline_s),
                    claim.record if claim else "",
                    job.webhook.url if job.webhook else "",
                ],
            )
            for job in jobs
        ]
        # Indexed in the same round trip, after them: a listing drops an index
        # entry whose job it cannot find (one that was not made).
        owners = sorted({job.owner for job in jobs})
        for owner in owners:
            calls.append(
                self._index.add_call(owner, [job.job_id for job in jobs if job.owner == owner])
            )
        if claim:
            # The key's record lives in another slot than the job: read after the
            # job is made, it must still hold this request's claim (a request
            # that stalled past a take-over leaves its job unconfirmed, gone).
            calls.append(("GET", [claim.record], []))
        replies = await self._pipeliner.run(calls)
        if claim and text(replies[-1] or b"") != claim.value:
            await self.discard([job.job_id for job in jobs])
            raise IdempotencyConflict(
                "another request with this Idempotency-Key took it over while this one "
                "stalled; retry to get its job"
            )
        created: list[Job] = []
        for job, flat in zip(jobs, replies[: len(jobs)], strict=True):
            if flat is None:
                raise FactqError(f"job id {job.job_id} is already taken")
            created.append(job_from_fields(flat_fields(flat)))
        return created

    @backend_errors
    async def confirm(self, job_ids: Sequence[str]) -> None:
        """The jobs' messages are in the queue: keep the jobs while they are live."""
        confirm = self._scripts["confirm"]
        await self._pipeliner.run(
            [(confirm, self._keys.job_keys(job_id), []) for job_id in job_ids]
        )

    @backend_errors
    async def is_provisional(self, job_id: str) -> bool:
        """Whether the job is queued and was never confirmed (its TTL still runs)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.job(job_id), "status")
            pipe.pttl(self._keys.job(job_id))
            status, ttl_ms = await pipe.execute()
        return bool(status == b"queued" and ttl_ms > 0)

    @backend_errors
    async def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job, or `JobNotFound`; with an owner, another owner's job is not found."""
        return job_from_fields(await self.fields(job_id, owner))

    @backend_errors
    async def cancel(self, job_id: str, owner: str) -> Job:
        """Cancel a queued job now, or ask the worker of a running one to stop it."""
        [(outcome, flat)] = await self._pipeliner.run(
            [
                (
                    self._scripts["cancel"],
                    self._keys.job_keys(job_id),
                    [
                        self._keys.events_channel(job_id),
                        self._settings.result_ttl_s,
                        owner,
                        self._keys.control_channel,
                    ],
                )
            ]
        )
        transition = observed(Transition.from_reply(outcome, flat))
        if transition.job is None:
            raise JobNotFound(job_id)
        if transition.outcome is Outcome.TERMINAL:
            raise AlreadyFinished(f"job {job_id} has already finished ({transition.job.status})")
        return transition.job

    @backend_errors
    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Those of the jobs whose cancel was asked, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._keys.job(job_id), "cancel_requested")
            flags = await pipe.execute()
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag == b"1"}

    @backend_errors
    async def discard(self, job_ids: Sequence[str]) -> None:
        """Remove jobs whose publish failed; a message that got out finds no job and is dropped."""
        keys = [key for job_id in job_ids for key in self._keys.job_keys(job_id)]
        if keys:
            await self._redis.delete(*keys)

    @backend_errors
    async def delete(
        self,
        job_id: str,
        owner: str,
        result_formats: Sequence[str],
        computation: Computation | None = None,
    ) -> None:
        """Forget a finished job and its results now; then free its Idempotency-Key,
        and its computation's stored outcome, when they still name this job."""
        record = await self._redis.hget(self._keys.job(job_id), "idempotency_key")
        results = [self._keys.result(job_id, fmt) for fmt in result_formats]
        [reply] = await self._pipeliner.run(
            [(self._scripts["delete"], [*self._keys.job_keys(job_id), *results], [owner])]
        )
        outcome = text(reply)
        if outcome == Outcome.MISSING:
            raise JobNotFound(job_id)
        if outcome != Outcome.DELETED:
            # The script answers the status of a job that has not finished.
            raise NotFinished(f"job {job_id} is {outcome}; only a finished job can be deleted")
        # Each in its own slot, each only if it still names this job: if this
        # step is lost, a key naming a job that is gone makes a new one.
        frees: list[Call] = []
        if record:
            frees.append((self._scripts["idempotency"], [text(record)], ["forget", job_id]))
        if computation is not None:
            frees.append(
                (self._scripts["computation"], [computation.outcome_key], ["release", job_id, 0])
            )
        if frees:
            await self._pipeliner.run(frees)

    async def fields(self, job_id: str, owner: str | None) -> dict[str, str]:
        """The job's hash as text; `JobNotFound` when it is gone or another owner's."""
        # Batched with the reads of other requests in the same turn: many
        # followers arriving at once take one connection, not one each.
        [raw] = await self._pipeliner.run([("HGETALL", [self._keys.job(job_id)], [])])
        fields = {text(key): text(value) for key, value in raw.items()}
        if not fields or (owner is not None and fields.get("owner") != owner):
            raise JobNotFound(job_id)
        return fields
