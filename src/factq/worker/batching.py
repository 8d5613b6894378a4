"""Dynamic batching: a batched task's jobs, gathered into one call of its function.

Jobs wait here once their messages arrive, still queued. A batch closes when
it holds `max_batch_size` items or `max_batch_delay_ms` after its first job
arrived, whichever comes first; it then waits for a free pool process, and
takes in whatever else arrived meanwhile, up to the size. Each job of it
starts on its own (a job cancelled or expired meanwhile leaves the batch), and
ends on its own: its output, its failure, or its cancel, which takes it out of
a batch that runs on for the others. A pool process lost mid-batch fails no
job: each goes back to the queue and runs again, and still ends once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal

from factq.aio import cancel_and_wait
from factq.broker import JobMessage
from factq.state.records import Outcome
from factq.state.store import Store
from factq.tasks import BatchLimits, Task, TaskOutput
from factq.worker.cancels import CancelAsked
from factq.worker.pool import PoolProcessLost, TaskFailed, TaskPool, TaskTimedOut
from factq.worker.retry import retry_backend

logger = logging.getLogger(__name__)

# How a batched job's run came out: its output, or the exception that ended it.
BatchAttempt = TaskOutput | CancelAsked | PoolProcessLost | TaskFailed | TaskTimedOut


@dataclass(frozen=True, slots=True)
class NotStarted:
    """The job did not start: what becomes of its message."""

    settlement: Literal["ack", "requeue"]


@dataclass(slots=True, eq=False)
class _Waiting:
    job: JobMessage
    size: int
    cancel: asyncio.Event
    arrived: float
    outcome: asyncio.Future[BatchAttempt | NotStarted] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def end(self, outcome: BatchAttempt | NotStarted) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)


STOPPING: Final = NotStarted("requeue")


class Batcher:
    """Gathers one task's jobs into batches and runs each batch in the pool."""

    def __init__(
        self,
        task: Task,
        limits: BatchLimits,
        *,
        store: Store,
        pool: TaskPool,
        slots: asyncio.Semaphore,
        timeout_s: float,
        should_exit: asyncio.Event,
    ) -> None:
        assert task.batch is not None
        self._task = task
        self._batching = task.batch
        self._max_size = limits.max_batch_size
        self._delay_s = limits.max_batch_delay_ms / 1000
        self._store = store
        self._pool = pool
        self._slots = slots
        self._timeout_s = timeout_s
        self._should_exit = should_exit
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._arrived = asyncio.Event()
        self._batches: set[asyncio.Task[None]] = set()

    async def run(self, job: JobMessage, cancel: asyncio.Event) -> BatchAttempt | NotStarted:
        """Wait for the job's place in a batch, and for how its run came out."""
        waiting = _Waiting(
            job,
            self._batching.size_of(job.input),
            cancel,
            asyncio.get_running_loop().time(),
        )
        self._waiting.append(waiting)
        self._arrived.set()
        try:
            return await asyncio.shield(waiting.outcome)
        finally:
            if not waiting.outcome.done():  # cancelled before its batch took it
                self._discard(waiting)

    async def gather(self) -> None:
        """Form batches until cancelled; each runs in a task of its own."""
        try:
            while True:
                await self._wait_for_a_batch()
                await self._slots.acquire()
                batch = self._take()
                if not batch:
                    self._slots.release()
                    continue
                running = asyncio.create_task(self._run_batch(batch))
                self._batches.add(running)
                running.add_done_callback(self._batches.discard)
        finally:
            await cancel_and_wait(set(self._batches))
            for waiting in self._waiting:
                waiting.end(STOPPING)

    async def _wait_for_a_batch(self) -> None:
        """Until a batch is full, or its first job has waited the longest delay."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._waiting[0].arrived + self._delay_s
        while self._items() < self._max_size and self._waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _items(self) -> int:
        return sum(waiting.size for waiting in self._waiting)

    def _take(self) -> list[_Waiting]:
        """The next batch: jobs in their order of arrival, up to the size (at least one)."""
        batch: list[_Waiting] = []
        items = 0
        while self._waiting:
            waiting = self._waiting[0]
            if batch and items + waiting.size > self._max_size:
                break
            self._waiting.popleft()
            if waiting.outcome.done():
                continue
            batch.append(waiting)
            items += waiting.size
        return batch

    def _discard(self, waiting: _Waiting) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiting)

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        try:
            if self._should_exit.is_set():
                # Stopping: jobs that have not started go back to the queue.
                for waiting in batch:
                    waiting.end(STOPPING)
                return
            started = await self._start(batch)
            if started:
                await self._compute(started)
        except BaseException as exc:
            # Cancelled at shutdown, or Redis gone while stopping: the jobs
            # not yet ended go back to the queue, and run again.
            for waiting in batch:
                waiting.end(STOPPING)
            if not isinstance(exc, Exception):
                raise
            logger.exception("a batch of %s could not run; its jobs go back", self._task.name)
        finally:
            self._slots.release()

    async def _start(self, batch: list[_Waiting]) -> list[_Waiting]:
        """Start each job; those that cannot start (ended, cancelled, expired) leave."""
        store, stop = self._store, self._should_exit
        transitions = await asyncio.gather(
            *(
                retry_backend(partial(store.runs.mark_running, waiting.job.job_id), stop)
                for waiting in batch
            )
        )
        started = []
        for waiting, transition in zip(batch, transitions, strict=True):
            job = waiting.job
            # The batch's lines are about several jobs: each names its own.
            about = {"job_id": job.job_id, "request_id": job.request_id}
            if transition.outcome == Outcome.STARTED:
                started.append(waiting)
                logger.info("job %s started: %s, in a batch", job.job_id, job.task, extra=about)
            else:
                logger.info(
                    "job %s is %s; not running it", job.job_id, transition.outcome, extra=about
                )
                waiting.end(NotStarted("ack"))
        return started

    async def _compute(self, batch: list[_Waiting]) -> None:
        """Run the batch; a job cancelled meanwhile leaves it at once, and once
        every job has left, the run is stopped (its process ended)."""
        task = self._task
        run = asyncio.create_task(
            self._pool.run_batch(
                task.function,
                [waiting.job.input for waiting in batch],
                job_ids=[waiting.job.job_id for waiting in batch],
                timeout_s=self._timeout_s,
                model_of=task.name if task.load is not None else None,
            )
        )
        asked: dict[asyncio.Future[Any], _Waiting] = {
            asyncio.ensure_future(waiting.cancel.wait()): waiting for waiting in batch
        }
        try:
            while not run.done():
                done, _ = await asyncio.wait({run, *asked}, return_when=asyncio.FIRST_COMPLETED)
                for cancelled in done - {run}:
                    waiting = asked.pop(cancelled)
                    waiting.end(CancelAsked(waiting.job.job_id))
                if not asked and not run.done():
                    run.cancel()
                    await asyncio.gather(run, return_exceptions=True)
                    return
        finally:
            await cancel_and_wait(set(asked))
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        try:
            outputs: list[TaskOutput | TaskFailed] = run.result()
        except (PoolProcessLost, TaskTimedOut) as exc:
            for waiting in batch:
                waiting.end(exc)
            return
        for waiting, output in zip(batch, outputs, strict=True):
            waiting.end(output)
