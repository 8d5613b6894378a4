"""Identical deterministic jobs, one computation (see `factq.state.computations`).

The job that holds a computation's lease computes it and renews the lease
while it runs; an identical job waits for its outcome, then ends with a copy
of it. Sharing is best effort: when it cannot be arranged, a job computes for
itself, and no job ever waits past the time its own run would need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

from factq.aio import cancel_and_wait
from factq.broker import JobMessage
from factq.errors import BackendUnavailable
from factq.schema import JobStatus
from factq.settings import CONSUMER_TIMEOUT_MARGIN_S, Settings
from factq.state.computations import FAILURE_TTL_S, RENEW_EVERY_S, Computation
from factq.state.records import Outcome, Transition
from factq.state.store import Store
from factq.submit import shared_computation
from factq.tasks import TaskOutput, TaskRegistry
from factq.worker.cancels import CancelAsked
from factq.worker.retry import retry_backend

logger = logging.getLogger(__name__)

# How often a job waiting on an identical job's computation looks for its outcome.
SHARED_WAIT_FIRST_S: Final = 0.02
SHARED_WAIT_MAX_S: Final = 0.25

T = TypeVar("T")
Compute = Callable[[], Awaitable[TaskOutput]]


class SharedComputations:
    """Leases, waits and stored outcomes of the computations jobs share."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        settings: Settings,
        should_exit: asyncio.Event,
    ) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings
        self._should_exit = should_exit

    def of(self, job: JobMessage) -> Computation | None:
        """The job's computation, when identical jobs may share it."""
        return shared_computation(self._store, self._registry, self._settings, job.task, job.input)

    async def compute_once(
        self, job: JobMessage, shared: Computation, cancel: asyncio.Event, compute: Compute
    ) -> TaskOutput | None:
        """The task's output, computed by this job (with `compute`); or None once
        the job has ended as an identical job ended, before or meanwhile."""
        store = self._store
        formats = [fmt.name for fmt in self._registry.get_task(job.task).formats]
        pause = SHARED_WAIT_FIRST_S
        # Wait no longer than leaves time for a run of its own before the
        # broker's consumer timeout takes the message back.
        settings = self._settings
        wait_until = time.monotonic() + (
            settings.broker_consumer_timeout_s - CONSUMER_TIMEOUT_MARGIN_S - settings.job_timeout_s
        )
        while True:
            other = await self._retry(lambda: store.computations.outcome(shared))
            if other is not None:
                ended = await self._retry(
                    partial(store.runs.finish_like, job.job_id, other, formats)
                )
                if ended.outcome != Outcome.UNAVAILABLE:
                    logger.info("job %s ended as job %s, its identical twin", job.job_id, other)
                    return None
            holder = await self._retry(lambda: store.computations.claim(shared, job.job_id))
            if holder == job.job_id:
                renewing = asyncio.create_task(self._renew(shared, job.job_id))
                try:
                    return await compute()
                finally:
                    await cancel_and_wait({renewing})
            if time.monotonic() + pause > wait_until:
                logger.warning("job %s waited on job %s too long; computing it", job.job_id, holder)
                return await compute()
            # Job `holder` computes it now: wait for its outcome, or for its
            # lease to end without one (cancelled, or its worker lost).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), pause)
            if cancel.is_set():
                raise CancelAsked(job.job_id)
            pause = min(pause * 2, SHARED_WAIT_MAX_S)

    async def share_outcome(self, shared: Computation | None, ended: Transition) -> None:
        """Let identical jobs end as this one did, unless it ended otherwise (a
        cancel won). Best effort: without it they compute for themselves. A
        failure is shared only with the jobs waiting on it now."""
        if shared is None:
            return
        job = ended.job
        if job is None:
            return
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            succeeded = job.status == JobStatus.SUCCEEDED
            ttl_s = self._settings.result_cache_s if succeeded else FAILURE_TTL_S
            try:
                await self._store.computations.remember(shared, job.id, ttl_s, succeeded=succeeded)
            except BackendUnavailable as exc:
                logger.debug("outcome of job %s not shared: %s", job.id, exc)

    async def release(self, shared: Computation, job_id: str) -> None:
        """Free the lease job_id holds (its lease expiry frees it otherwise)."""
        try:
            await self._store.computations.release(shared, job_id)
        except BackendUnavailable as exc:
            logger.debug("lease of job %s left to expire: %s", job_id, exc)

    async def _renew(self, shared: Computation, job_id: str) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                await self._store.computations.renew(shared, job_id)
            except BackendUnavailable as exc:
                logger.debug("lease of job %s not renewed: %s", job_id, exc)

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retry_backend(call, self._should_exit)
