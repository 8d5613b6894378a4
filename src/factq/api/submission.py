"""Turning requests into queued jobs: validate, store, publish, confirm."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
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
from factq.models import Job
from factq.settings import Settings
from factq.store import NewJob, Store
from factq.tasks import TaskRegistry
from factq.webhooks import WebhookRequest, allowed_hosts, check_destination

logger = logging.getLogger(__name__)

REPLAY_WAIT_STEPS = 20
REPLAY_WAIT_STEP_S = 0.1


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
    made = await store.claim_idempotency_key(new.owner, idempotency_key, fingerprint, new.job_id)
    if made is not None:
        return await _made_by_key(store, made, new.owner), True
    try:
        [job] = await enqueue(store, broker, [new])
    except BaseException:
        with contextlib.suppress(FactqError):
            await store.release_idempotency_key(new.owner, idempotency_key)
        raise
    return job, False


async def _made_by_key(store: Store, job_id: str, owner: str) -> Job:
    # A concurrent request with the same key may still be storing its job.
    for _ in range(REPLAY_WAIT_STEPS):
        try:
            return await store.get_job(job_id, owner)
        except JobNotFound:
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
    created = await store.create_jobs(jobs)
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
    await store.confirm_jobs([job.job_id for job in jobs])
    return created


def _ranges(indexes: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, indexes[:shown]))
    return text + (", ..." if len(indexes) > shown else "")
