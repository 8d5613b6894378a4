"""Consume a job, run it in the pool, store its outcome, then acknowledge.

The acknowledgement always comes after the outcome is stored: a worker that
dies at any point leaves the message to be redelivered, and the state-change
scripts make sure a job still ends exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from factq.broker import Broker, Consumer, JobMessage
from factq.errors import BackendUnavailable, UnknownTask
from factq.models import JobError
from factq.settings import Settings
from factq.store import StartOutcome, Store
from factq.tasks import TaskRegistry
from factq.worker.pool import PoolProcessLost, TaskFailed, TaskPool, TaskTimedOut
from factq.worker.retry import retry_backend

logger = logging.getLogger(__name__)


class Worker:
    """One worker process: `async with Worker(settings) as worker: await worker.run()`."""

    def __init__(self, settings: Settings, registry: TaskRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or TaskRegistry.from_settings(settings)
        self._stack = AsyncExitStack()
        self._should_exit = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._store: Store | None = None
        self._broker: Broker | None = None
        self._pool: TaskPool | None = None

    async def __aenter__(self) -> Self:
        try:
            self._store = await self._stack.enter_async_context(Store.open(self.settings))
            await self._store.ping()
            self._broker = await self._stack.enter_async_context(
                Broker.open(self.settings, name=f"factq-worker-{self.settings.namespace}")
            )
            self._pool = TaskPool(self.settings.concurrency, preload=self.registry.modules)
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
        consumers: list[Consumer] = [
            await self._broker.consume_jobs(self._on_job, prefetch=self._pool.processes),
            await self._broker.consume_dead_letters(self._on_dead_letter),
        ]
        logger.info(
            "consuming %s with %d processes", self._broker.names.jobs_queue, self._pool.processes
        )
        await self._should_exit.wait()
        logger.info("worker stopping: %d jobs in hand", len(self._running))
        for consumer in consumers:
            await consumer.cancel()
        await self._drain()

    async def _drain(self) -> None:
        running = list(self._running.values())
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
            await message.ack()
            return
        task = asyncio.current_task()
        assert task is not None
        self._running[job.job_id] = task
        try:
            await self._process(job, message)
        except asyncio.CancelledError:
            # Shutdown past the grace period: hand the job back to the queue.
            await asyncio.shield(message.nack(requeue=True))
            raise
        finally:
            self._running.pop(job.job_id, None)

    async def _process(self, job: JobMessage, message: AbstractIncomingMessage) -> None:
        assert self._store is not None and self._pool is not None
        store = self._store
        started = await retry_backend(lambda: store.mark_running(job.job_id), self._should_exit)
        if started.outcome != StartOutcome.STARTED:
            logger.info("job %s is %s; not running it", job.job_id, started.outcome)
            await message.ack()
            return
        try:
            task = self.registry.get_task(job.task)
            output = await self._pool.run(
                task.function, job.input, timeout_s=self.settings.job_timeout_s
            )
        except PoolProcessLost as exc:
            logger.warning("job %s: %s; returning it to the queue", job.job_id, exc)
            await retry_backend(lambda: store.note_lost_attempt(job.job_id), self._should_exit)
            await message.reject(requeue=True)
            return
        except (TaskFailed, TaskTimedOut, UnknownTask) as exc:
            error = _job_error(exc)
            await retry_backend(lambda: store.mark_failed(job.job_id, error), self._should_exit)
        else:
            await retry_backend(
                lambda: store.mark_succeeded(job.job_id, output.summary, output.formats),
                self._should_exit,
            )
        await message.ack()

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """A job delivered max_attempts times without finishing: fail it, once."""
        assert self._store is not None
        store = self._store
        try:
            job = JobMessage.model_validate_json(message.body)
        except ValidationError:
            await message.ack()
            return
        try:
            lost = await store.was_last_attempt_lost(job.job_id)
            error = (
                JobError(type="worker_lost", message="its pool process died on its last attempt")
                if lost
                else JobError(
                    type="too_many_attempts",
                    message=f"delivered {self.settings.max_attempts} times without finishing",
                )
            )
            await store.mark_failed(job.job_id, error)
        except BackendUnavailable:
            await asyncio.sleep(1)
            await message.nack(requeue=True)
            return
        await message.ack()


def _job_error(exc: Exception) -> JobError:
    if isinstance(exc, TaskTimedOut):
        return JobError(type="timeout", message=str(exc))
    if isinstance(exc, TaskFailed):
        return JobError(type="task_error", message=f"{exc.error_type}: {exc.message}")
    return JobError(type="task_error", message=str(exc))
