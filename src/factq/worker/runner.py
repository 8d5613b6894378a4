"""Consume a job, run it in the pool, store its outcome, then acknowledge.

The acknowledgement always comes after the outcome is stored: a worker that
dies at any point leaves the message to be redelivered, and the state-change
scripts make sure a job still ends exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Self

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from factq.broker import Broker, Consumer, JobMessage, settle
from factq.errors import BackendUnavailable, UnknownTask
from factq.schema import JobError, JobStatus
from factq.settings import CONSUMER_TIMEOUT_MARGIN_S, Settings
from factq.state.computations import FAILURE_TTL_S, RENEW_EVERY_S, Computation
from factq.state.records import Outcome, Transition
from factq.state.store import Store
from factq.tasks import TaskOutput, TaskRegistry
from factq.worker.pool import PoolProcessLost, TaskFailed, TaskPool, TaskTimedOut
from factq.worker.retry import retry_backend
from factq.worker.webhook_delivery import WebhookSender

logger = logging.getLogger(__name__)

CANCEL_CHECK_INTERVAL_S = 1.0
# How often a job waiting on an identical job's computation looks for its outcome.
SHARED_WAIT_FIRST_S = 0.02
SHARED_WAIT_MAX_S = 0.25


class Worker:
    """One worker process: `async with Worker(settings) as worker: await worker.run()`."""

    def __init__(self, settings: Settings, registry: TaskRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or TaskRegistry.from_settings(settings)
        self._stack = AsyncExitStack()
        self._should_exit = asyncio.Event()
        self._running: dict[str, _HeldJob] = {}
        self._store: Store | None = None
        self._broker: Broker | None = None
        self._pool: TaskPool | None = None

    async def __aenter__(self) -> Self:
        try:
            self._store = await self._stack.enter_async_context(Store.open(self.settings))
            await self._store.ping()
            for warning in await self._store.durability_warnings():
                logger.warning("%s", warning)
            self._broker = await self._stack.enter_async_context(
                Broker.open(self.settings, name=f"factq-worker-{self.settings.namespace}")
            )
            self._pool = TaskPool(self.settings, preload=self.registry.modules)
            self._stack.push_async_callback(self._pool.close)
            await self._pool.start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def stop(self) -> None:
        """Ask `run` to return once the jobs in hand are done (signal-handler safe)."""
        self._should_exit.set()

    async def run(self) -> None:
        """Consume until `stop`, then drain: finish held jobs within the grace period."""
        assert self._broker is not None and self._pool is not None
        # Listen for cancels before taking jobs, so that none is missed.
        listening = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancels(listening))
        try:
            await asyncio.wait_for(listening.wait(), 10)
        except TimeoutError:
            watcher.cancel()
            raise BackendUnavailable("cannot subscribe to the control channel on Redis") from None
        consumers: list[Consumer] = [
            await self._broker.consume_jobs(self._on_job, prefetch=self._pool.processes),
            await self._broker.consume_dead_letters(self._on_dead_letter),
        ]
        assert self._store is not None
        webhooks = asyncio.create_task(
            WebhookSender(self._store, self.settings).run(self._should_exit)
        )
        logger.info(
            "consuming %s with %d processes", self._broker.names.jobs_queue, self._pool.processes
        )
        await self._should_exit.wait()
        logger.info("worker stopping: %d jobs in hand", len(self._running))
        for consumer in consumers:
            await consumer.cancel()
        await self._drain()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        try:
            await asyncio.wait_for(webhooks, self.settings.webhook_timeout_s + 5)
        except TimeoutError:
            logger.warning(
                "webhook deliveries still running at exit; another worker will send them"
            )

    async def _drain(self) -> None:
        running = [held.task for held in self._running.values()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self.settings.shutdown_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # Jobs.

    async def _on_job(self, message: AbstractIncomingMessage) -> None:
        try:
            job = JobMessage.model_validate_json(message.body)
        except ValidationError:
            logger.error("dropping a malformed message %r", message.message_id)
            await settle(message, "ack")
            return
        previous = self._running.get(job.job_id)
        if previous is not None:
            # RabbitMQ gave the job back while this worker still runs it (the
            # channel of its first delivery closed, see below). Let that run end
            # rather than start a second one beside it, which would double the
            # work and escape a cancel; this copy then finds the job finished.
            await asyncio.wait({previous.task})
            if self._should_exit.is_set():
                await settle(message, "requeue")
                return
        # The job runs in a task of its own, shielded: aio-pika cancels a
        # consumer's handlers when its channel closes (RabbitMQ restarts, the
        # connection drops), which ended the run in hand, its pool process or
        # its result with it, so that every broker restart threw away the work
        # of every running job. The message comes back to the queue anyway; the
        # run goes on, stores its outcome, and the redelivered copy finds it.
        cancel = asyncio.Event()
        task = asyncio.create_task(self._hold(job, message, cancel))
        held = self._running[job.job_id] = _HeldJob(task, cancel)
        task.add_done_callback(lambda _: self._forget(job.job_id, held))
        await asyncio.shield(task)

    async def _hold(
        self, job: JobMessage, message: AbstractIncomingMessage, cancel: asyncio.Event
    ) -> None:
        try:
            await self._process(job, message, cancel)
        except asyncio.CancelledError:
            # Shutdown past the grace period: hand the job back to the queue.
            await asyncio.shield(settle(message, "requeue"))
            raise
        except Exception:
            # Never hold a message we cannot finish: back to the queue, where
            # the delivery limit ends a job that fails this way every time.
            logger.exception("job %s could not be processed; returning it", job.job_id)
            await settle(message, "requeue")

    def _forget(self, job_id: str, held: _HeldJob) -> None:
        # A redelivered copy may hold the same id now: leave its entry alone.
        if self._running.get(job_id) is held:
            del self._running[job_id]

    async def _process(
        self, job: JobMessage, message: AbstractIncomingMessage, cancel: asyncio.Event
    ) -> None:
        assert self._store is not None
        store = self._store
        started = await retry_backend(
            lambda: store.runs.mark_running(job.job_id), self._should_exit
        )
        if started.outcome != Outcome.STARTED:
            logger.info("job %s is %s; not running it", job.job_id, started.outcome)
            await settle(message, "ack")
            return
        shared = self._computation(job)
        try:
            if shared is None:
                output: TaskOutput | None = await self._compute(job, cancel)
            else:
                output = await self._compute_once(job, shared, cancel)
            if output is None:
                await settle(message, "ack")
                return
        except CancelAsked:
            logger.info("job %s cancelled while running", job.job_id)
            await retry_backend(lambda: store.runs.mark_cancelled(job.job_id), self._should_exit)
        except PoolProcessLost as exc:
            logger.warning("job %s: %s; returning it to the queue", job.job_id, exc)
            await retry_backend(lambda: store.runs.note_lost_attempt(job.job_id), self._should_exit)
            await settle(message, "requeue")
            return
        except (TaskFailed, TaskTimedOut, UnknownTask) as exc:
            error = _job_error(exc)
            ended = await retry_backend(
                lambda: store.runs.mark_failed(job.job_id, error), self._should_exit
            )
            await self._share_outcome(shared, ended)
        else:
            ended = await retry_backend(
                lambda: store.runs.mark_succeeded(job.job_id, output.summary, output.formats),
                self._should_exit,
            )
            await self._share_outcome(shared, ended)
        finally:
            if shared is not None:
                with contextlib.suppress(BackendUnavailable):
                    await store.computations.release(shared, job.job_id)
        await settle(message, "ack")

    # Identical deterministic jobs: one computation (see factq.state.computations).

    def _computation(self, job: JobMessage) -> Computation | None:
        """The job's computation, when identical jobs may share it."""
        assert self._store is not None
        task = self.registry.get(job.task)
        if task is None or not task.deterministic or not self._cache_ttl_s:
            return None
        return self._store.computations.of(job.task, job.input, task.version)

    @property
    def _cache_ttl_s(self) -> int:
        return min(self.settings.result_cache_ttl_s, self.settings.result_ttl_s)

    async def _compute_once(
        self, job: JobMessage, shared: Computation, cancel: asyncio.Event
    ) -> TaskOutput | None:
        """The task's output, computed by this job; or None once the job has ended
        as an identical job ended, computed before or meanwhile by another."""
        assert self._store is not None
        store = self._store
        formats = [fmt.name for fmt in self.registry.get_task(job.task).formats]
        pause = SHARED_WAIT_FIRST_S
        # Wait no longer than leaves time for a run of its own before the
        # broker's consumer timeout takes the message back.
        settings = self.settings
        wait_until = time.monotonic() + (
            settings.broker_consumer_timeout_s - CONSUMER_TIMEOUT_MARGIN_S - settings.job_timeout_s
        )
        while True:
            other = await retry_backend(
                lambda: store.computations.outcome(shared), self._should_exit
            )
            if other is not None:
                ended = await retry_backend(
                    partial(store.runs.finish_like, job.job_id, other, formats), self._should_exit
                )
                if ended.outcome != Outcome.UNAVAILABLE:
                    logger.info("job %s ended as job %s, its identical twin", job.job_id, other)
                    return None
            holder = await retry_backend(
                lambda: store.computations.claim(shared, job.job_id), self._should_exit
            )
            if holder == job.job_id:
                renewing = asyncio.create_task(self._renew(shared, job.job_id))
                try:
                    return await self._compute(job, cancel)
                finally:
                    renewing.cancel()
            if time.monotonic() + pause > wait_until:
                logger.warning("job %s waited on job %s too long; computing it", job.job_id, holder)
                return await self._compute(job, cancel)
            # Job `holder` computes it now: wait for its outcome, or for its
            # lease to end without one (cancelled, or its worker lost).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), pause)
            if cancel.is_set():
                raise CancelAsked(job.job_id)
            pause = min(pause * 2, SHARED_WAIT_MAX_S)

    async def _renew(self, shared: Computation, job_id: str) -> None:
        assert self._store is not None
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            with contextlib.suppress(BackendUnavailable):
                await self._store.computations.renew(shared, job_id)

    async def _share_outcome(self, shared: Computation | None, ended: Transition) -> None:
        """Let identical jobs end as this one did, unless it ended otherwise (a
        cancel won). Best effort: without it they compute for themselves. A
        failure is shared only with the jobs waiting on it now."""
        job = ended.job
        if shared is None or self._store is None or job is None:
            return
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            succeeded = job.status == JobStatus.SUCCEEDED
            ttl_s = self._cache_ttl_s if succeeded else FAILURE_TTL_S
            with contextlib.suppress(BackendUnavailable):
                await self._store.computations.remember(shared, job.id, ttl_s, succeeded=succeeded)

    async def _compute(self, job: JobMessage, cancel: asyncio.Event) -> TaskOutput:
        """The task's output, or `CancelAsked` once its process was ended on a cancel."""
        assert self._pool is not None
        task = self.registry.get_task(job.task)
        run = asyncio.create_task(
            self._pool.run(
                task.function, job.input, job_id=job.job_id, timeout_s=self.settings.job_timeout_s
            )
        )
        asked = asyncio.create_task(cancel.wait())
        try:
            await asyncio.wait({run, asked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked.cancel()
            if not run.done():
                # Cancelling the run ends the pool process; pebble replaces it.
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        if run.cancelled():
            raise CancelAsked(job.job_id)
        return run.result()

    # Cancels.

    async def _watch_cancels(self, listening: asyncio.Event) -> None:
        """Stop held jobs whose cancel was asked: told on the control channel, and
        checked once a second as well, since pub/sub can drop a message."""
        listener = asyncio.create_task(self._listen_for_cancels(listening))
        try:
            while True:
                await asyncio.sleep(CANCEL_CHECK_INTERVAL_S)
                if self._running and self._store is not None:
                    with contextlib.suppress(BackendUnavailable):
                        for job_id in await self._store.jobs.cancel_requested(list(self._running)):
                            self._cancel_held(job_id)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen_for_cancels(self, listening: asyncio.Event) -> None:
        assert self._store is not None
        while True:
            try:
                async for job_id in self._store.events.control_messages(listening):
                    self._cancel_held(job_id)
            except BackendUnavailable:
                await asyncio.sleep(1)

    def _cancel_held(self, job_id: str) -> None:
        held = self._running.get(job_id)
        if held is not None:
            held.cancel.set()

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """A job delivered max_attempts times without finishing: fail it, once."""
        assert self._store is not None
        store = self._store
        try:
            job = JobMessage.model_validate_json(message.body)
        except ValidationError:
            await settle(message, "ack")
            return
        try:
            lost = await store.runs.was_last_attempt_lost(job.job_id)
            error = (
                JobError(type="worker_lost", message="its pool process died on its last attempt")
                if lost
                else JobError(
                    type="too_many_attempts",
                    message=f"delivered {self.settings.max_attempts} times without finishing",
                )
            )
            await store.runs.mark_failed(job.job_id, error)
        except BackendUnavailable:
            await asyncio.sleep(1)
            await settle(message, "requeue")
            return
        await settle(message, "ack")


class CancelAsked(Exception):
    """The job's cancel was asked while it ran; its computation was stopped."""


@dataclass(slots=True)
class _HeldJob:
    """A job whose message this worker holds: the task running it, and its cancel signal."""

    task: asyncio.Task[None]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)


def _job_error(exc: Exception) -> JobError:
    if isinstance(exc, TaskTimedOut):
        return JobError(type="timeout", message=str(exc))
    if isinstance(exc, TaskFailed):
        return JobError(type="task_error", message=f"{exc.error_type}: {exc.message}")
    return JobError(type="task_error", message=str(exc))
