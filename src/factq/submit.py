"""Turning requests into queued jobs: validate, store, publish, confirm.

A job is stored first, provisional (with a short TTL), so that a worker never
gets a message for a job it cannot find; it is kept for good only once its
message is confirmed in the queue. The `Submitter` is one per API process,
owned by the app's lifespan, which waits for its confirmations at shutdown.

A job of a deterministic task whose computation already succeeded (within
`FACTQ_RESULT_CACHE_TTL_S`) is answered as it is made: it ends with a copy of
that result and is never queued.
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

from factq import metrics
from factq.broker import Broker, JobMessage
from factq.errors import (
    FactqError,
    IdempotencyConflict,
    InvalidInput,
    InvalidWebhook,
    JobNotFound,
    validation_details,
)
from factq.logs import current_request_id
from factq.schema import Job, JobRequest
from factq.settings import Settings
from factq.state.computations import Computation
from factq.state.idempotency import KeyClaim
from factq.state.records import NewJob, Outcome
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


def shared_computation(
    store: Store, registry: TaskRegistry, settings: Settings, task: str, job_input: dict[str, Any]
) -> Computation | None:
    """The computation identical jobs share: for a deterministic task while the
    result cache is on; else None."""
    found = registry.get(task)
    if found is None or not found.deterministic or not settings.result_cache_s:
        return None
    return store.computations.of(task, job_input, found.version)


class Submitter:
    """Queues jobs: stores them, publishes their messages, and confirms them."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        registry: TaskRegistry | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        # Without both, no job is answered from a stored result.
        self._registry = registry
        self._settings = settings
        # Confirmations still retrying, held so that they are not
        # garbage-collected and so that `drain` can wait for them.
        self._confirming: set[asyncio.Task[None]] = set()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Store the jobs, publish their messages, then make the jobs durable."""
        created = await self._store_and_publish(jobs)
        await self._confirm([job.id for job in created if not job.status.is_terminal])
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
        if not job.status.is_terminal:
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
                    message = JobMessage(
                        job_id=job.id,
                        task=job.task,
                        input=job.input,
                        request_id=current_request_id(),
                    )
                    await self._broker.publish_jobs([message])
                    await store.jobs.confirm([job.id])
                return job
            await asyncio.sleep(REPLAY_WAIT_STEP_S)
        raise IdempotencyConflict("the request with this Idempotency-Key did not complete; retry")

    async def _store_and_publish(
        self, jobs: Sequence[NewJob], claim: KeyClaim | None = None
    ) -> list[Job]:
        """The stored jobs, once their messages are in the queue (or, for those a
        stored result answered, once they ended with it); on any failure, no
        unanswered job is left behind (a message that may have got out finds no
        job: dropped)."""
        shared = self._computations(jobs)
        # One round trip: the pipeline of this turn carries both.
        created, earlier = await asyncio.gather(
            self._store.jobs.create(jobs, claim), self._earlier_outcomes(shared)
        )
        answered = await self._answer(jobs, earlier)
        unanswered = [job for job in jobs if job.job_id not in answered]
        request_id = current_request_id()
        try:
            if unanswered:
                await self._broker.publish_jobs(
                    [
                        JobMessage(
                            job_id=job.job_id, task=job.task, input=job.input, request_id=request_id
                        )
                        for job in unanswered
                    ]
                )
        except BaseException:
            try:
                await self._store.jobs.discard([job.job_id for job in unanswered])
            except FactqError:
                # Redis is down too: the provisional TTL removes them.
                logger.warning("could not discard %d unpublished jobs", len(unanswered))
            raise
        for job in unanswered:
            logger.info("job %s queued: %s", job.job_id, job.task, extra={"job_id": job.job_id})
        for job in jobs:
            metrics.jobs_submitted(job.task).inc()
        return [answered.get(job.id, job) for job in created]

    def _computations(self, jobs: Sequence[NewJob]) -> dict[str, Computation]:
        """The shared computation of each job that has one, by job id."""
        if self._registry is None or self._settings is None:
            return {}
        found = {
            job.job_id: shared_computation(
                self._store, self._registry, self._settings, job.task, job.input
            )
            for job in jobs
        }
        return {job_id: shared for job_id, shared in found.items() if shared is not None}

    async def _earlier_outcomes(self, shared: dict[str, Computation]) -> dict[str, str]:
        """For each job, the id of a finished job of its computation, where one is
        stored. Best effort: without it, the job is queued as usual."""
        if not shared:
            return {}
        try:
            found = await self._store.computations.outcomes(list(shared.values()))
        except FactqError as exc:
            logger.debug("stored outcomes not read: %s", exc)
            return {}
        return {job_id: other for job_id, other in zip(shared, found, strict=True) if other}

    async def _answer(self, jobs: Sequence[NewJob], earlier: dict[str, str]) -> dict[str, Job]:
        """End the jobs that an earlier success answers, with a copy of its result;
        the ended jobs, by id. A job not ended here (the earlier one failed, or
        its result is gone) is queued as usual."""
        if not earlier or self._registry is None:
            return {}
        registry, runs = self._registry, self._store.runs
        todo = [job for job in jobs if job.job_id in earlier]
        ended = await asyncio.gather(
            *(
                runs.finish_like(
                    job.job_id,
                    earlier[job.job_id],
                    [fmt.name for fmt in registry.get_task(job.task).formats],
                    at_submission=True,
                )
                for job in todo
            ),
            return_exceptions=True,
        )
        answered: dict[str, Job] = {}
        for job, transition in zip(todo, ended, strict=True):
            if isinstance(transition, BaseException):
                # It may have ended all the same: its message then finds it
                # finished, and is dropped.
                logger.debug("job %s not answered from a stored result: %s", job.job_id, transition)
                continue
            if transition.outcome == Outcome.FINISHED and transition.job is not None:
                answered[job.job_id] = transition.job
                logger.info(
                    "job %s answered at submission as job %s ended",
                    job.job_id,
                    earlier[job.job_id],
                    extra={"job_id": job.job_id},
                )
        return answered

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
