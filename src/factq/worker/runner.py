"""Consume a job, run it in the pool, store its outcome, then acknowledge.

The acknowledgement always comes after the outcome is stored: a worker that
dies at any point leaves the message to be redelivered, and the state-change
scripts make sure a job still ends exactly once.

A worker serves the tasks it is told to (`factq worker --tasks`, else all),
consuming each one's queue once every pool process has loaded the task's
model; a task whose model cannot load is left out, with the reason logged. A
batched task's jobs run together (`factq.worker.batching`), each still ending
on its own.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from factq import metrics
from factq.aio import cancel_and_wait
from factq.broker import Broker, Consumer, JobMessage, Settlement, settle
from factq.errors import BackendUnavailable, FactqError, JobNotFound, QueueFull, UnknownTask
from factq.logs import log_context
from factq.schema import JobError, JobStatus
from factq.settings import Settings
from factq.state.computations import Computation
from factq.state.records import Outcome, Transition
from factq.state.store import Store
from factq.tasks import Task, TaskOutput, TaskRegistry
from factq.worker.batching import Batcher, NotStarted
from factq.worker.cancels import CancelAsked, CancelWatcher, HeldJob
from factq.worker.pool import PoolProcessLost, TaskFailed, TaskPool, TaskTimedOut
from factq.worker.retry import retry_backend
from factq.worker.sharing import SharedComputations
from factq.worker.webhook_delivery import WebhookSender

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S: Final = 10.0

# How a run came out: the task's output; None when the job ended as an
# identical job did; or the exception that ended it.
Attempt = (
    TaskOutput | None | CancelAsked | PoolProcessLost | TaskFailed | TaskTimedOut | UnknownTask
)

DEAD_LETTER_RETRY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Connected:
    """What a worker runs jobs with, connected and started together: the
    tasks it serves, their models loaded in every pool process."""

    store: Store
    broker: Broker
    pool: TaskPool
    tasks: tuple[Task, ...]


class Worker:
    """One worker process: `async with Worker(settings) as worker: await worker.run()`."""

    def __init__(self, settings: Settings, registry: TaskRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or TaskRegistry.from_settings(settings)
        self._stack = AsyncExitStack()
        self._should_exit = asyncio.Event()
        self._jobs: JobRunner | None = None

    async def __aenter__(self) -> Self:
        try:
            connected = await self._connect()
        except BaseException:
            await self._stack.aclose()
            raise
        self._jobs = JobRunner(connected, self.registry, self.settings, self._should_exit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._jobs = None
        await self._stack.aclose()

    async def _connect(self) -> Connected:
        settings = self.settings
        self._serve_metrics()
        store = await self._stack.enter_async_context(Store.open(settings))
        await store.ping()
        for warning in await store.durability_warnings():
            logger.warning("%s", warning)
        tasks = self._tasks_that_fit(self.registry.served(settings.worker_task_names))
        preload = [*self.registry.modules, *(m for task in tasks for m in task.preload)]
        pool = TaskPool(
            settings,
            preload=list(dict.fromkeys(preload)),
            loads={task.name: task.load for task in tasks if task.load is not None},
        )
        self._stack.push_async_callback(pool.close)
        not_loaded = await pool.start()
        for name, why in not_loaded.items():
            logger.error("task %s: its model did not load (%s); taking none of its jobs", name, why)
        tasks = [task for task in tasks if task.name not in not_loaded]
        if not tasks:
            raise FactqError("no task to serve: see above for why each was left out")
        broker = await self._stack.enter_async_context(
            Broker.open(
                settings,
                tasks=[task.name for task in tasks],
                name=f"factq-worker-{settings.namespace}",
            )
        )
        return Connected(store, broker, pool, tuple(tasks))

    def _serve_metrics(self) -> None:
        """The worker's series on FACTQ_METRICS_PORT (none when 0), until it exits."""
        port = self.settings.metrics_port
        if not port:
            return
        try:
            stop = metrics.serve(port)
        except OSError as exc:
            raise FactqError(f"cannot serve metrics on port {port}: {exc}") from exc
        self._stack.callback(stop)
        logger.info("metrics at http://0.0.0.0:%d/metrics", port)

    def _tasks_that_fit(self, tasks: list[Task]) -> list[Task]:
        """The tasks whose pool processes fit in the memory available now."""
        available = available_memory_mib()
        processes = self.settings.concurrency
        if available is None:
            return tasks
        needed = sum(task.memory_mib for task in tasks)
        fitting = []
        for task in tasks:
            if task.memory_mib and needed * processes > available:
                logger.error(
                    "task %s: needs %d MiB in each of %d pool processes, %d MiB available "
                    "(fewer processes, or fewer tasks per worker with --tasks); "
                    "taking none of its jobs",
                    task.name,
                    task.memory_mib,
                    processes,
                    available,
                )
                needed -= task.memory_mib
                continue
            fitting.append(task)
        return fitting

    def stop(self) -> None:
        """Ask `run` to return once the jobs in hand are done (signal-handler safe)."""
        self._should_exit.set()

    async def run(self) -> None:
        """Consume until `stop`, then drain: finish held jobs within the grace period."""
        if self._jobs is None:
            raise RuntimeError("a Worker runs inside `async with`, which connects it")
        await self._jobs.run()


class JobRunner:
    """Takes jobs from the queue and runs each, until told to stop."""

    def __init__(
        self,
        connected: Connected,
        registry: TaskRegistry,
        settings: Settings,
        should_exit: asyncio.Event,
    ) -> None:
        self._store = connected.store
        self._broker = connected.broker
        self._pool = connected.pool
        self._tasks = connected.tasks
        self._registry = registry
        self._settings = settings
        self._should_exit = should_exit
        self._running: dict[str, HeldJob] = {}
        # A held job starts (and shows as running) only once a pool process is
        # free for it; the prefetched ones wait here, still queued.
        self._slots = asyncio.Semaphore(self._pool.processes)
        self._sharing = SharedComputations(self._store, registry, settings, should_exit)
        self._batchers: dict[str, Batcher] = {}
        for task in self._tasks:
            limits = task.batch_limits(settings)
            if limits is not None:
                self._batchers[task.name] = Batcher(
                    task,
                    limits,
                    store=self._store,
                    pool=self._pool,
                    slots=self._slots,
                    timeout_s=settings.job_timeout_s,
                    should_exit=should_exit,
                )

    def _prefetch(self, task: Task) -> int:
        """Messages held of a task's queue: enough for every process to have its
        next job at hand, and for a batched task, for each process's next batch
        to fill while the current ones run."""
        processes = self._pool.processes
        held = processes * self._settings.prefetch_per_process
        limits = task.batch_limits(self._settings)
        if limits is not None:
            held = max(held, limits.max_batch_size * (processes + 1))
        return held

    async def run(self) -> None:
        # Listen for cancels before taking jobs, so that none is missed.
        listening = asyncio.Event()
        watcher = asyncio.create_task(CancelWatcher(self._store, self._running).run(listening))
        try:
            await asyncio.wait_for(listening.wait(), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            watcher.cancel()
            raise BackendUnavailable("cannot subscribe to the control channel on Redis") from None
        gathering = {asyncio.create_task(batcher.gather()) for batcher in self._batchers.values()}
        consumers: list[Consumer] = [
            await self._broker.consume_jobs(task.name, self._on_job, prefetch=self._prefetch(task))
            for task in self._tasks
        ]
        consumers.append(await self._broker.consume_dead_letters(self._on_dead_letter))
        webhooks = asyncio.create_task(
            WebhookSender(self._store, self._settings).run(self._should_exit)
        )
        logger.info(
            "serving %s with %d processes",
            ", ".join(
                task.name
                + (
                    ""
                    if (limits := task.batch_limits(self._settings)) is None
                    else f" (batches of up to {limits.max_batch_size})"
                )
                for task in self._tasks
            ),
            self._pool.processes,
        )
        await self._should_exit.wait()
        logger.info("worker stopping: %d jobs in hand", len(self._running))
        for consumer in consumers:
            await consumer.cancel()
        await self._drain()
        await cancel_and_wait({watcher, *gathering})
        try:
            await asyncio.wait_for(webhooks, self._settings.webhook_timeout_s + 5)
        except TimeoutError:
            logger.warning(
                "webhook deliveries still running at exit; another worker will send them"
            )

    async def _drain(self) -> None:
        running = [held.task for held in self._running.values()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=self._settings.shutdown_grace_s)
        await cancel_and_wait(pending)

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
        # connection drops), and the run in hand, its pool process and its
        # result must outlive that. The message comes back to the queue; the
        # run goes on, stores its outcome, and the redelivered copy finds it.
        cancel = asyncio.Event()
        task = asyncio.create_task(self._hold(job, message, cancel))
        held = self._running[job.job_id] = HeldJob(task, cancel)
        metrics.JOBS_IN_FLIGHT.inc()
        task.add_done_callback(lambda _: self._forget(job.job_id, held))
        await asyncio.shield(task)

    async def _hold(
        self, job: JobMessage, message: AbstractIncomingMessage, cancel: asyncio.Event
    ) -> None:
        # Every line logged while the job is in hand is about it (this task's context).
        with log_context(job_id=job.job_id, request_id=job.request_id):
            await self._hold_in_context(job, message, cancel)

    async def _hold_in_context(
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

    def _forget(self, job_id: str, held: HeldJob) -> None:
        metrics.JOBS_IN_FLIGHT.dec()
        # A redelivered copy may hold the same id now: leave its entry alone.
        if self._running.get(job_id) is held:
            del self._running[job_id]

    async def _process(
        self, job: JobMessage, message: AbstractIncomingMessage, cancel: asyncio.Event
    ) -> None:
        batcher = self._batchers.get(job.task)
        if batcher is not None:
            await self._process_batched(batcher, job, message, cancel)
            return
        store, stop = self._store, self._should_exit
        async with self._slots:
            if stop.is_set():
                # Stopping: a job that has not started goes back to the queue.
                await settle(message, "requeue")
                return
            started = await retry_backend(lambda: store.runs.mark_running(job.job_id), stop)
            if started.outcome != Outcome.STARTED:
                logger.info("job %s is %s; not running it", job.job_id, started.outcome)
                await settle(message, "ack")
                return
            logger.info("job %s started: %s", job.job_id, job.task)
            shared = self._sharing.of(job)
            try:
                attempt = await self._attempt(job, shared, cancel)
            except BaseException:
                if shared is not None:
                    await self._sharing.release(shared, job.job_id)
                raise
        # The pool process is free for the next job while this one's end is stored.
        try:
            settlement = await self._end(job, shared, attempt)
        finally:
            if shared is not None:
                await self._sharing.release(shared, job.job_id)
        await settle(message, settlement)

    async def _process_batched(
        self,
        batcher: Batcher,
        job: JobMessage,
        message: AbstractIncomingMessage,
        cancel: asyncio.Event,
    ) -> None:
        """A batched job: run with others, then ended on its own. Its stored
        outcome answers identical jobs later, as any deterministic job's does."""
        attempt = await batcher.run(job, cancel)
        if isinstance(attempt, NotStarted):
            await settle(message, attempt.settlement)
            return
        settlement = await self._end(job, self._sharing.of(job), attempt)
        await settle(message, settlement)

    async def _attempt(
        self, job: JobMessage, shared: Computation | None, cancel: asyncio.Event
    ) -> Attempt:
        """What running the job came to: its output, None when it ended as an
        identical job did, or the exception that ended the run."""
        try:
            if shared is None:
                return await self._compute(job, cancel)
            return await self._sharing.compute_once(
                job, shared, cancel, lambda: self._compute(job, cancel)
            )
        except (CancelAsked, PoolProcessLost, TaskFailed, TaskTimedOut, UnknownTask) as exc:
            return exc

    async def _end(
        self, job: JobMessage, shared: Computation | None, attempt: Attempt
    ) -> Settlement:
        """Store how the attempt ended; what then becomes of its message."""
        store, stop = self._store, self._should_exit
        if attempt is None:
            return "ack"
        if isinstance(attempt, CancelAsked):
            logger.info("job %s cancelled while running", job.job_id)
            await retry_backend(lambda: store.runs.mark_cancelled(job.job_id), stop)
            return "ack"
        if isinstance(attempt, PoolProcessLost):
            logger.warning("job %s: %s; returning it to the queue", job.job_id, attempt)
            await retry_backend(lambda: store.runs.note_lost_attempt(job.job_id), stop)
            return "requeue"
        if isinstance(attempt, Exception):
            error = _job_error(attempt)
            ended = await retry_backend(lambda: store.runs.mark_failed(job.job_id, error), stop)
            _log_end(job, ended, error)
        else:
            output = attempt
            ended = await retry_backend(
                lambda: store.runs.mark_succeeded(job.job_id, output.summary, output.formats),
                stop,
            )
            _log_end(job, ended, None)
        await self._sharing.share_outcome(shared, ended)
        return "ack"

    async def _compute(self, job: JobMessage, cancel: asyncio.Event) -> TaskOutput:
        """The task's output, or `CancelAsked` once its process was ended on a cancel."""
        task = self._registry.get_task(job.task)
        run = asyncio.create_task(
            self._pool.run(
                task.function,
                job.input,
                job_id=job.job_id,
                timeout_s=self._settings.job_timeout_s,
                model_of=task.name if task.load is not None else None,
            )
        )
        asked = asyncio.create_task(cancel.wait())
        try:
            await asyncio.wait({run, asked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked.cancel()
            if not run.done():
                # Cancelling the run ends the pool process; the pool replaces it.
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        if run.cancelled():
            raise CancelAsked(job.job_id)
        return run.result()

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """A job RabbitMQ delivered max_attempts times: fail it, once; unless it
        started fewer times than that, and goes back to its queue.

        RabbitMQ counts every return of a message toward the delivery limit,
        also of one a worker held but never started: a worker killed while it
        held a batch's jobs, or one that stopped, returns them all. The job's
        record counts the runs that started (`attempts`), and only those fail it.
        """
        try:
            job = JobMessage.model_validate_json(message.body)
        except ValidationError:
            await settle(message, "ack")
            return
        with log_context(job_id=job.job_id, request_id=job.request_id):
            await self._dead_letter(job, message)

    async def _dead_letter(self, job: JobMessage, message: AbstractIncomingMessage) -> None:
        store = self._store
        try:
            if await self._started_too_few_times(job):
                await self._broker.publish_jobs([job])
                logger.info("job %s reached the delivery limit unstarted; queued again", job.job_id)
                await settle(message, "ack")
                return
            lost = await store.runs.was_last_attempt_lost(job.job_id)
            error = (
                JobError(type="worker_lost", message="its pool process died on its last attempt")
                if lost
                else JobError(
                    type="too_many_attempts",
                    message=f"delivered {self._settings.max_attempts} times without finishing",
                )
            )
            ended = await store.runs.mark_failed(job.job_id, error)
        except (BackendUnavailable, QueueFull):
            await asyncio.sleep(DEAD_LETTER_RETRY_S)
            await settle(message, "requeue")
            return
        if ended.outcome == Outcome.FINISHED:
            logger.warning("job %s failed: %s: %s", job.job_id, error.type, error.message)
        await settle(message, "ack")

    async def _started_too_few_times(self, job: JobMessage) -> bool:
        try:
            record = await self._store.jobs.get(job.job_id)
        except JobNotFound:
            return False
        terminal = record.status not in (JobStatus.QUEUED, JobStatus.RUNNING)
        return not terminal and record.attempts < self._settings.max_attempts


def available_memory_mib() -> int | None:
    """Memory available for new processes (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _log_end(job: JobMessage, ended: Transition, error: JobError | None) -> None:
    if ended.outcome != Outcome.FINISHED:
        logger.info("job %s ran; its outcome is not stored (%s)", job.job_id, ended.outcome)
    elif error is None:
        logger.info("job %s succeeded", job.job_id)
    else:
        logger.warning("job %s failed: %s: %s", job.job_id, error.type, error.message)


def _job_error(exc: Exception) -> JobError:
    if isinstance(exc, TaskTimedOut):
        return JobError(type="timeout", message=str(exc))
    if isinstance(exc, TaskFailed):
        return JobError(type="task_error", message=f"{exc.error_type}: {exc.message}")
    return JobError(type="task_error", message=str(exc))
