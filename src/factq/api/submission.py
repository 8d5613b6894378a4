"""Turning requests into queued jobs: validate, store, publish, confirm."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from factq.api.ratelimit import SubmissionLimiter
from factq.broker import Broker, JobMessage
from factq.errors import (
    FactqError,
    IdempotencyConflict,
    InvalidInput,
    InvalidWebhook,
    JobNotFound,
)
from factq.idempotency import KeyClaim
from factq.models import Job
from factq.settings import Settings
from factq.store import NewJob, Store
from factq.tasks import TaskRegistry
from factq.webhooks import WebhookRequest, allowed_hosts, check_destination

logger = logging.getLogger(__name__)

REPLAY_WAIT_STEPS = 20
REPLAY_WAIT_STEP_S = 0.1
# A key claimed this long ago (by the server's clock) whose job does not exist,
# or was never confirmed, was left by a failed request: a live one makes its
# job, and confirms it, within seconds.
CLAIM_STALE_S = 15.0
TAKE_OVER_TRIES = 3
CONFIRM_RETRY_FIRST_S = 0.25
CONFIRM_RETRY_MAX_S = 5.0


class JobRequest(BaseModel):
    """A submission: which task, on which input."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"task": "factorial", "input": {"n": 150000}}]},
    )

    task: str = Field(description="A task name from GET /v1/tasks.", min_length=1, max_length=200)
    input: dict[str, Any] = Field(description="The task's input, as its input schema says.")
    webhook: WebhookRequest | None = Field(
        None, description="POST these events of the job to this URL, signed."
    )
    deadline_s: float | None = Field(
        None,
        # A number, never a boolean or a numeric string (as JSON Schema says).
        strict=True,
        gt=0,
        le=30 * 86_400,
        description="Not started within this many seconds of submission: not run, "
        "failed with `expired`. Default FACTQ_JOB_DEADLINE_S (none).",
    )


class BatchRequest(BaseModel):
    """Several submissions, accepted all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[Any] = Field(
        description="Job requests, each like the body of POST /v1/jobs.",
        json_schema_extra={"items": {"$ref": "#/components/schemas/JobRequest"}},
    )


def new_job_id() -> str:
    """128 random bits, as 32 hex digits."""
    return secrets.token_hex(16)


def validate_request(
    request: JobRequest, registry: TaskRegistry, owner: str, default_deadline_s: float | None
) -> NewJob:
    """A new job for a well-formed request, or `UnknownTask` / `InvalidInput`."""
    task = registry.get_task(request.task)
    return NewJob(
        new_job_id(),
        task.name,
        task.validate_input(request.input),
        owner,
        request.webhook,
        request.deadline_s if request.deadline_s is not None else default_deadline_s,
    )


async def check_webhooks(jobs: Sequence[NewJob], settings: Settings) -> None:
    """Refuse webhooks while no secret signs them, and those to forbidden destinations."""
    problems: list[dict[str, Any]] = []
    allowed = allowed_hosts(settings.webhook_allowed_hosts)
    for index, job in enumerate(jobs):
        if job.webhook is None:
            continue
        try:
            if not settings.webhook_secret.get_secret_value():
                raise InvalidWebhook("webhooks are off here: FACTQ_WEBHOOK_SECRET is not set")
            await check_destination(job.webhook.url, allowed)
        except InvalidWebhook as exc:
            problems.append({"index": index, "loc": "webhook.url", "message": exc.message})
    if len(jobs) == 1 and problems:
        raise InvalidWebhook(problems[0]["message"])
    if problems:
        raise InvalidWebhook(
            f"{len(problems)} of {len(jobs)} jobs have a webhook that may not be used; "
            "no job was queued",
            details=problems,
        )


def validate_batch(
    items: Sequence[Any], registry: TaskRegistry, owner: str, default_deadline_s: float | None
) -> list[NewJob]:
    """New jobs for every item, or one `InvalidInput` naming each bad item's index."""
    jobs: list[NewJob] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            request = JobRequest.model_validate(item)
            jobs.append(validate_request(request, registry, owner, default_deadline_s))
        except ValidationError as exc:
            problems.extend(
                {"index": index, "loc": ".".join(map(str, error["loc"])), "message": error["msg"]}
                for error in exc.errors(include_url=False)
            )
        except FactqError as exc:
            for detail in exc.details or [{"loc": "task", "message": exc.message}]:
                problems.append({"index": index, **detail})
    if problems:
        indexes = sorted({problem["index"] for problem in problems})
        raise InvalidInput(
            f"{len(indexes)} of {len(items)} jobs are invalid (indexes {_ranges(indexes)}); "
            "no job was queued",
            details=problems,
        )
    return jobs


async def admit(
    request: Request, limiter: SubmissionLimiter, store: Store, owner: str, jobs: int
) -> None:
    """Apply the submission rate (per key, or per client address when keys are off)
    and the cap on each key's jobs in flight; 429 when over either."""
    client = request.client.host if request.client else "unknown"
    await limiter.admit(owner or f"address:{client}", jobs)
    await store.index.admit(owner, jobs)


async def enqueue_once(
    store: Store, broker: Broker, new: NewJob, idempotency_key: str | None, fingerprint: str
) -> tuple[Job, bool]:
    """Queue the job; or, when the Idempotency-Key already made a job for the same
    request, that job (and True: a replay)."""
    if idempotency_key is None:
        [job] = await enqueue(store, broker, [new])
        return job, False
    keys = store.idempotency
    for _ in range(TAKE_OVER_TRIES):
        claim = await keys.claim(new.owner, idempotency_key, fingerprint, new.job_id)
        if claim.ours:
            break
        made = await _made_by_key(store, broker, claim, new.owner)
        if made is not None:
            return made, True
        # The request that claimed the key never made its job (it failed while
        # Redis or RabbitMQ was down, and could not free the key): this one will,
        # unless another retry got there first; then, look again.
        taken = await keys.take_over(claim, new.job_id)
        if taken is not None:
            claim = taken
            break
    else:
        raise IdempotencyConflict("another request with this Idempotency-Key is in progress")
    try:
        [job] = await _store_and_publish(store, broker, [new], claim)
    except BaseException:
        # Nothing was published: the key may make its job on a retry.
        with contextlib.suppress(FactqError):
            await keys.release(claim)
        raise
    await _confirm(store, [new.job_id])
    return job, False


async def _made_by_key(store: Store, broker: Broker, claim: KeyClaim, owner: str) -> Job | None:
    """The job the key made, waiting a little for a concurrent request still storing
    it; None when the request that claimed the key is long gone without making it.

    A job found still provisional that long after (its request ended, or stalls,
    before it could know whether the message got out) is queued again here, so
    that the job the first request may have answered with is never lost: a
    second message is harmless, the job still ends once.
    """
    started = time.monotonic()
    for _ in range(REPLAY_WAIT_STEPS):
        stale = claim.age_s + time.monotonic() - started > CLAIM_STALE_S
        try:
            job = await store.get_job(claim.job_id, owner)
        except JobNotFound:
            if stale:
                return None
        else:
            if stale and await store.is_provisional(job.id):
                logger.warning("queueing job %s again: its request never confirmed it", job.id)
                message = JobMessage(job_id=job.id, task=job.task, input=job.input)
                await broker.publish_jobs([message])
                await store.confirm_jobs([job.id])
            return job
        await asyncio.sleep(REPLAY_WAIT_STEP_S)
    raise IdempotencyConflict("the request with this Idempotency-Key did not complete; retry")


def fingerprint(request: JobRequest) -> str:
    """What makes two submissions the same request, for Idempotency-Key."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def enqueue(store: Store, broker: Broker, jobs: Sequence[NewJob]) -> list[Job]:
    """Store the jobs, publish their messages, then make the jobs durable.

    Stored first, with a short TTL, so that a worker never gets a message for
    a job it cannot find; kept for good only once every publish is confirmed.
    """
    created = await _store_and_publish(store, broker, jobs)
    await _confirm(store, [job.job_id for job in jobs])
    return created


async def _store_and_publish(
    store: Store, broker: Broker, jobs: Sequence[NewJob], claim: KeyClaim | None = None
) -> list[Job]:
    """The stored jobs, once their messages are in the queue; on any failure, no
    job is left behind (a message that may have got out finds no job: dropped)."""
    created = await store.create_jobs(jobs, claim)
    try:
        await broker.publish_jobs(
            [JobMessage(job_id=job.job_id, task=job.task, input=job.input) for job in jobs]
        )
    except BaseException:
        try:
            await store.discard_jobs([job.job_id for job in jobs])
        except FactqError:
            # Redis is down too: the provisional TTL removes them.
            logger.warning("could not discard %d unpublished jobs", len(jobs))
        raise
    return created


# Confirmations still running, by store, held so that they are not
# garbage-collected and so that shutdown can wait for them.
_confirming: dict[Store, set[asyncio.Task[None]]] = {}


async def _confirm(store: Store, job_ids: list[str]) -> None:
    """Keep the published jobs for good. Their messages are in the queue, so the
    jobs are accepted whatever happens here: answering 503 now would make the
    client submit them again. A confirmation Redis refuses goes on in the
    background (a worker that starts a job keeps it too)."""
    try:
        await store.confirm_jobs(job_ids)
    except FactqError:
        logger.warning("Redis did not confirm %d queued jobs; retrying", len(job_ids))
        task = asyncio.create_task(_keep_confirming(store, job_ids))
        running = _confirming.setdefault(store, set())
        running.add(task)
        task.add_done_callback(running.discard)


async def finish_confirmations(store: Store, timeout_s: float) -> None:
    """Before the store closes: let confirmations still waiting on Redis finish."""
    running = _confirming.pop(store, set())
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        logger.error(
            "%d queued jobs still unconfirmed at shutdown: those still queued when their "
            "provisional TTL ends will be dropped",
            len(pending),
        )


async def _keep_confirming(store: Store, job_ids: list[str]) -> None:
    pause = CONFIRM_RETRY_FIRST_S
    give_up = time.monotonic() + store.provisional_ttl_s
    while time.monotonic() + pause <= give_up:
        await asyncio.sleep(pause)
        try:
            await store.confirm_jobs(job_ids)
            return
        except FactqError:
            pause = min(pause * 2, CONFIRM_RETRY_MAX_S)
    logger.error(
        "could not confirm %d queued jobs while Redis was down; those still queued "
        "when their provisional TTL ends will be dropped",
        len(job_ids),
    )


def _ranges(indexes: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, indexes[:shown]))
    return text + (", ..." if len(indexes) > shown else "")
