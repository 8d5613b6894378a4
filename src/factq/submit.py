"""Turning requests into queued jobs: validate, store, publish, confirm.

A job is stored first, provisional (with a short TTL), so that a worker never
gets a message for a job it cannot find; it is kept for good only once its
message is confirmed in the queue. The `Submitter` is one per API process,
owned by the app's lifespan, which waits for its confirmations at shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from factq.broker import Broker, JobMessage
from factq.errors import (
    FactqError,
    IdempotencyConflict,
    InvalidInput,
    InvalidWebhook,
    JobNotFound,
    validation_details,
)
from factq.schema import Job, JobRequest
from factq.settings import Settings
from factq.state.idempotency import KeyClaim
from factq.state.records import NewJob
from factq.state.store import Store
from factq.tasks import TaskRegistry
from factq.webhooks.destinations import allowed_hosts, check_destination

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
                {"index": index, **detail}
                for detail in validation_details(exc.errors(include_url=False))
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


def fingerprint(request: JobRequest) -> str:
    """What makes two submissions the same request, for Idempotency-Key."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _ranges(indexes: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, indexes[:shown]))
    return text + (", ..." if len(indexes) > shown else "")


class Submitter:
    """Queues jobs: stores them, publishes their messages, and confirms them."""

    def __init__(self, store: Store, broker: Broker) -> None:
        self._store = store
        self._broker = broker
        # Confirmations still retrying, held so that they are not
        # garbage-collected and so that `drain` can wait for them.
        self._confirming: set[asyncio.Task[None]] = set()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Store the jobs, publish their messages, then make the jobs durable."""
        created = await self._store_and_publish(jobs)
        await self._confirm([job.job_id for job in jobs])
        return created

    async def enqueue_once(
        self, new: NewJob, idempotency_key: str | None, request: JobRequest
    ) -> tuple[Job, bool]:
        """Queue the job; or, when the Idempotency-Key already made a job for the
        same request, that job (and True: a replay)."""
        if idempotency_key is None:
            [job] = await self.enqueue([new])
            return job, False
        keys = self._store.idempotency
        request_fingerprint = fingerprint(request)
        for _ in range(TAKE_OVER_TRIES):
            claim = await keys.claim(new.owner, idempotency_key, request_fingerprint, new.job_id)
            if claim.ours:
                break
            made = await self._find_job_of_key_requeueing_unconfirmed(claim, new.owner)
            if made is not None:
                return made, True
            # The request that claimed the key never made its job (it failed while
            # Redis or RabbitMQ was down, and could not free the key): this one
            # will, unless another retry got there first; then, look again.
            taken = await keys.take_over(claim, new.job_id)
            if taken is not None:
                claim = taken
                break
        else:
            raise IdempotencyConflict("another request with this Idempotency-Key is in progress")
        try:
            [job] = await self._store_and_publish([new], claim)
        except BaseException:
            # Nothing was published: the key may make its job on a retry.
            try:
                await keys.release(claim)
            except FactqError as exc:
                logger.debug("Idempotency-Key left claimed until it is stale: %s", exc)
            raise
        await self._confirm([new.job_id])
        return job, False

    async def drain(self, timeout_s: float) -> None:
        """Before the store closes: let confirmations still waiting on Redis finish."""
        running, self._confirming = self._confirming, set()
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

    async def _find_job_of_key_requeueing_unconfirmed(
        self, claim: KeyClaim, owner: str
    ) -> Job | None:
        """The job the key made, waiting a little for a concurrent request still
        storing it; None when the request that claimed the key is long gone
        without making it.

        A job found still provisional that long after (its request ended, or
        stalls, before it could know whether the message got out) is published
        and confirmed again here, so that the job the first request may have
        answered with is never lost: a second message is harmless, the job
        still ends once.
        """
        store = self._store
        started = time.monotonic()
        for _ in range(REPLAY_WAIT_STEPS):
            stale = claim.age_s + time.monotonic() - started > CLAIM_STALE_S
            try:
                job = await store.jobs.get(claim.job_id, owner)
            except JobNotFound:
                if stale:
                    return None
            else:
                if stale and await store.jobs.is_provisional(job.id):
                    logger.warning("queueing job %s again: its request never confirmed it", job.id)
                    message = JobMessage(job_id=job.id, task=job.task, input=job.input)
                    await self._broker.publish_jobs([message])
                    await store.jobs.confirm([job.id])
                return job
            await asyncio.sleep(REPLAY_WAIT_STEP_S)
        raise IdempotencyConflict("the request with this Idempotency-Key did not complete; retry")

    async def _store_and_publish(
        self, jobs: Sequence[NewJob], claim: KeyClaim | None = None
    ) -> list[Job]:
        """The stored jobs, once their messages are in the queue; on any failure, no
        job is left behind (a message that may have got out finds no job: dropped)."""
        created = await self._store.jobs.create(jobs, claim)
        try:
            await self._broker.publish_jobs(
                [JobMessage(job_id=job.job_id, task=job.task, input=job.input) for job in jobs]
            )
        except BaseException:
            try:
                await self._store.jobs.discard([job.job_id for job in jobs])
            except FactqError:
                # Redis is down too: the provisional TTL removes them.
                logger.warning("could not discard %d unpublished jobs", len(jobs))
            raise
        return created

    async def _confirm(self, job_ids: list[str]) -> None:
        """Keep the published jobs for good. Their messages are in the queue, so the
        jobs are accepted whatever happens here: answering 503 now would make the
        client submit them again. A confirmation Redis refuses goes on in the
        background (a worker that starts a job keeps it too)."""
        try:
            await self._store.jobs.confirm(job_ids)
        except FactqError:
            logger.warning("Redis did not confirm %d queued jobs; retrying", len(job_ids))
            task = asyncio.create_task(self._keep_confirming(job_ids))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)

    async def _keep_confirming(self, job_ids: list[str]) -> None:
        pause = CONFIRM_RETRY_FIRST_S
        give_up = time.monotonic() + self._store.jobs.provisional_ttl_s
        while time.monotonic() + pause <= give_up:
            await asyncio.sleep(pause)
            try:
                await self._store.jobs.confirm(job_ids)
                return
            except FactqError:
                pause = min(pause * 2, CONFIRM_RETRY_MAX_S)
        logger.error(
            "could not confirm %d queued jobs while Redis was down; those still queued "
            "when their provisional TTL ends will be dropped",
            len(job_ids),
        )
