"""Job state and results in Redis.

Every change of a job's state is one Lua script (see `factq/lua/`): it checks
that the move is forward, writes the hash, counts the change, appends the
event to the job's stream and publishes it, all at once. Redis errors become
`BackendUnavailable` here, at the edge.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from factq import lua
from factq.computations import Computation, Computations
from factq.errors import (
    AlreadyFinished,
    BackendUnavailable,
    FactqError,
    IdempotencyConflict,
    JobNotFound,
    NotFinished,
)
from factq.idempotency import IdempotencyKeys, KeyClaim
from factq.job_index import JobIndex
from factq.models import Job, JobError, JobEvent, JobStatus
from factq.names import Names
from factq.redis_edge import backend_errors, flat_fields, text
from factq.settings import Settings
from factq.webhook_queue import WebhookQueue
from factq.webhooks import WebhookRequest, redact_url

logger = logging.getLogger(__name__)

RESULT_CHUNK_BYTES = 64 * 1024
POOL_WAIT_S = 10.0
# How long a result being received lives, should its request never finish.
UPLOAD_TTL_S = 300


class StartOutcome(StrEnum):
    """What `Store.mark_running` found."""

    STARTED = "started"
    TERMINAL = "terminal"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated submission, before it is stored."""

    job_id: str
    task: str
    input: dict[str, Any]
    owner: str
    webhook: WebhookRequest | None = None
    deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of a state-change script: what happened, and the job after it."""

    outcome: str
    job: Job | None


def _shown(webhook: WebhookRequest) -> str:
    """A webhook as the job shows it (and its events carry it): its URL redacted."""
    return webhook.model_copy(update={"url": redact_url(webhook.url)}).model_dump_json()


class Store:
    """Jobs, their event logs and their results, in one Redis database."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self.names = Names(settings.namespace)
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(lua.script(name))
            for name in (
                "create",
                "confirm",
                "start",
                "finish",
                "cancel",
                "delete",
                "lost",
                "webhook_log",
                "idempotency",
                "finish_from",
                "computation",
            )
        }
        self.index = JobIndex(client, self.names, settings)
        self.webhooks = WebhookQueue(client, self.names, self._scripts["webhook_log"])
        self.computations = Computations(client, self.names, self._scripts["computation"])
        self.idempotency = IdempotencyKeys(
            client, self.names, settings.result_ttl_s, self._scripts["idempotency"]
        )

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Store]:
        """A store with its own connection pool, closed on exit."""
        # A bounded pool that makes a request wait for a free connection,
        # rather than fail, when many arrive at once.
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(),
            max_connections=settings.redis_max_connections,
            timeout=POOL_WAIT_S,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=15,
            # With maintenance notifications on ("auto" under RESP3), redis-py
            # skips its closed-socket check when it hands out a connection, so
            # after a Redis restart every pooled connection failed once.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        client = redis.Redis.from_pool(pool)
        try:
            yield cls(client, settings)
        finally:
            await client.aclose()

    @property
    def provisional_ttl_s(self) -> int:
        """How long a job lives unconfirmed, before its message is known queued."""
        return self._settings.provisional_ttl_s

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

    # Jobs.

    @backend_errors
    async def create_jobs(self, jobs: Sequence[NewJob], claim: KeyClaim | None = None) -> list[Job]:
        """Store new queued jobs, with the provisional TTL, and index them by owner;
        with the Idempotency-Key claim made for them, only while it still holds."""
        guard = [claim.record] if claim else []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                await self._scripts["create"](
                    keys=[*self._job_keys(job.job_id), *guard],
                    args=[
                        self.names.events_channel,
                        self._settings.provisional_ttl_s,
                        job.job_id,
                        job.task,
                        json.dumps(job.input, separators=(",", ":")),
                        job.owner,
                        _shown(job.webhook) if job.webhook else "",
                        self.names.webhooks if job.webhook else "",
                        "" if job.deadline_s is None else repr(job.deadline_s),
                        claim.value if claim else "",
                        job.webhook.url if job.webhook else "",
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        created: list[Job] = []
        for job, flat in zip(jobs, replies, strict=True):
            if flat is None:
                raise FactqError(f"job id {job.job_id} is already taken")
            if flat == b"claim_lost":
                raise IdempotencyConflict(
                    "another request with this Idempotency-Key took it over while this one "
                    "stalled; retry to get its job"
                )
            created.append(Job.from_fields(flat_fields(flat)))
        # Indexed only once they exist: a listing drops index entries
        # whose job it cannot find.
        for owner in {job.owner for job in jobs}:
            await self.index.add(owner, [job.job_id for job in jobs if job.owner == owner])
        return created

    @backend_errors
    async def confirm_jobs(self, job_ids: Sequence[str]) -> None:
        """The jobs' messages are in the queue: keep the jobs while they are live."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._scripts["confirm"](keys=self._job_keys(job_id), client=pipe)
            await pipe.execute()

    @backend_errors
    async def is_provisional(self, job_id: str) -> bool:
        """Whether the job is queued and was never confirmed (its TTL still runs)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.names.job(job_id), "status")
            pipe.pttl(self.names.job(job_id))
            status, ttl_ms = await pipe.execute()
        return bool(status == b"queued" and ttl_ms > 0)

    @backend_errors
    async def get_job(self, job_id: str, owner: str | None = None) -> Job:
        """The job, or `JobNotFound`; with an owner, another owner's job is not found."""
        return Job.from_fields(await self._get_fields(job_id, owner))

    @backend_errors
    async def get_event(self, job_id: str, owner: str | None = None) -> JobEvent:
        """The job's current state as an event, with the `seq` of its last change."""
        return JobEvent.from_fields(await self._get_fields(job_id, owner))

    @backend_errors
    async def read_events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """The job's logged events with a `seq` above `after`, oldest first."""
        entries: Any = await self._redis.xrange(self.names.events(job_id), min=f"({after}-0")
        return [JobEvent.from_fields(json.loads(fields[b"job"])) for _, fields in entries]

    @backend_errors
    async def cancel_job(self, job_id: str, owner: str) -> Job:
        """Cancel a queued job now, or ask the worker of a running one to stop it."""
        outcome, flat = await self._scripts["cancel"](
            keys=self._job_keys(job_id),
            args=[
                self.names.events_channel,
                self._settings.result_ttl_s,
                owner,
                self.names.control_channel,
            ],
        )
        transition = self._transition(outcome, flat)
        if transition.job is None:
            raise JobNotFound(job_id)
        if transition.outcome == "terminal":
            raise AlreadyFinished(f"job {job_id} has already finished ({transition.job.status})")
        return transition.job

    @backend_errors
    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Those of the jobs whose cancel was asked, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.names.job(job_id), "cancel_requested")
            flags = await pipe.execute()
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag == b"1"}

    @backend_errors
    async def mark_running(self, job_id: str) -> Transition:
        """Start an attempt: queued (or running, after a lost worker) -> running."""
        outcome, flat = await self._scripts["start"](
            keys=self._job_keys(job_id),
            args=[self.names.events_channel, self._settings.result_ttl_s],
        )
        return self._transition(outcome, flat)

    @backend_errors
    async def mark_succeeded(
        self, job_id: str, summary: dict[str, Any], results: dict[str, bytes]
    ) -> Transition:
        """Store the result and end the job, once; a cancel asked meanwhile wins."""
        fmts = list(results)
        outcome, flat = await self._succeed(job_id, summary, fmts, [results[f] for f in fmts])
        return self._transition(outcome, flat)

    async def _succeed(
        self,
        job_id: str,
        summary: dict[str, Any],
        fmts: Sequence[str],
        values: Sequence[bytes | str],
        uploads: Sequence[str] = (),
    ) -> Any:
        """The finish script ending the job succeeded, its results in `values` (or,
        with `values` '@uploads', moved from the `uploads` keys)."""
        return await self._scripts["finish"](
            keys=[
                *self._job_keys(job_id),
                *(self.names.result(job_id, fmt) for fmt in fmts),
                *uploads,
            ],
            args=[
                self.names.events_channel,
                self._settings.result_ttl_s,
                JobStatus.SUCCEEDED.value,
                json.dumps(summary, separators=(",", ":")),
                *values,
            ],
        )

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

    @backend_errors
    async def mark_succeeded_from_uploads(
        self, job_id: str, summary: dict[str, Any], uploads: dict[str, str]
    ) -> Transition:
        """`mark_succeeded`, with each format's result moved from its upload key."""
        fmts = list(uploads)
        outcome, flat = await self._succeed(
            job_id, summary, fmts, ["@uploads"], [uploads[fmt] for fmt in fmts]
        )
        if outcome == b"missing_upload":
            # Expired, or lost with a Redis restart: the job is unchanged.
            raise BackendUnavailable("the received result was lost before it was stored; retry")
        return self._transition(outcome, flat)

    @backend_errors
    async def finish_like(self, job_id: str, other_id: str, formats: Sequence[str]) -> Transition:
        """End the job as the finished job other_id of the same computation ended,
        with a copy of its result or its error; outcome 'unavailable' when that
        job, or a result of it, is gone."""
        outcome, flat = await self._scripts["finish_from"](
            keys=[
                *self._job_keys(job_id),
                self.names.job(other_id),
                *(self.names.result(job_id, fmt) for fmt in formats),
                *(self.names.result(other_id, fmt) for fmt in formats),
            ],
            args=[self.names.events_channel, self._settings.result_ttl_s],
        )
        return self._transition(outcome, flat)

    @backend_errors
    async def mark_failed(self, job_id: str, error: JobError) -> Transition:
        """End the job as failed, once."""
        outcome, flat = await self._scripts["finish"](
            keys=self._job_keys(job_id),
            args=[
                self.names.events_channel,
                self._settings.result_ttl_s,
                JobStatus.FAILED.value,
                error.model_dump_json(),
            ],
        )
        return self._transition(outcome, flat)

    @backend_errors
    async def mark_cancelled(self, job_id: str) -> Transition:
        """End the job as cancelled, once (its computation was stopped)."""
        outcome, flat = await self._scripts["finish"](
            keys=self._job_keys(job_id),
            args=[self.names.events_channel, self._settings.result_ttl_s, "cancelled", ""],
        )
        return self._transition(outcome, flat)

    @backend_errors
    async def note_lost_attempt(self, job_id: str) -> None:
        """The running attempt's pool process died (read back by `was_last_attempt_lost`)."""
        await self._scripts["lost"](keys=self._job_keys(job_id))

    @backend_errors
    async def was_last_attempt_lost(self, job_id: str) -> bool:
        return await self._redis.hget(self.names.job(job_id), "lost") == b"1"

    @backend_errors
    async def discard_jobs(self, job_ids: Sequence[str]) -> None:
        """Remove jobs whose publish failed; a message that got out finds no job and is dropped."""
        keys = [key for job_id in job_ids for key in self._job_keys(job_id)]
        if keys:
            await self._redis.delete(*keys)

    @backend_errors
    async def delete_job(
        self,
        job_id: str,
        owner: str,
        result_formats: Sequence[str],
        computation: Computation | None = None,
    ) -> None:
        """Forget a finished job and its results now; free its Idempotency-Key, and
        its computation's stored outcome when that is this job's."""
        record = await self._redis.hget(self.names.job(job_id), "idempotency_key")
        results = [self.names.result(job_id, fmt) for fmt in result_formats]
        extras = [text(record)] if record else []
        if computation is not None:
            extras.append(computation.outcome_key)
        outcome = await self._scripts["delete"](
            keys=[*self._job_keys(job_id), *results, *extras],
            args=[owner, len(results), int(bool(record)), int(computation is not None)],
        )
        if outcome == b"missing":
            raise JobNotFound(job_id)
        if outcome != b"deleted":
            raise NotFinished(
                f"job {job_id} is {outcome.decode()}; only a finished job can be deleted"
            )

    async def control_messages(self, subscribed: asyncio.Event) -> AsyncIterator[str]:
        """Job ids published on the control channel (cancels of running jobs);
        `subscribed` is set once none can be missed any more."""
        try:
            async with self._redis.pubsub() as pubsub:
                await pubsub.subscribe(self.names.control_channel)
                subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        yield text(message["data"])
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("Redis is unavailable") from exc

    # Results.

    @backend_errors
    async def result_size(self, job_id: str, fmt: str) -> int:
        size: int = await self._redis.strlen(self.names.result(job_id, fmt))
        return size

    async def iter_result(
        self, job_id: str, fmt: str, size: int, chunk_bytes: int = RESULT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The stored result in chunks, so that no process holds it whole."""
        key = self.names.result(job_id, fmt)
        for start in range(0, size, chunk_bytes):
            try:
                chunk = await self._redis.getrange(key, start, start + chunk_bytes - 1)
            except RedisError as exc:
                raise BackendUnavailable("Redis is unavailable") from exc
            if not chunk:
                return
            yield chunk if isinstance(chunk, bytes) else chunk.encode()

    # Helpers.

    def _job_keys(self, job_id: str) -> list[str]:
        return [self.names.job(job_id), self.names.events(job_id)]

    async def _get_fields(self, job_id: str, owner: str | None) -> dict[str, str]:
        raw = await self._redis.hgetall(self.names.job(job_id))
        fields = {text(key): text(value) for key, value in raw.items()}
        if not fields or (owner is not None and fields.get("owner") != owner):
            raise JobNotFound(job_id)
        return fields

    @staticmethod
    def _transition(outcome: bytes, flat: Sequence[bytes]) -> Transition:
        return Transition(outcome.decode(), Job.from_fields(flat_fields(flat)) if flat else None)
