"""The process pool that runs task functions, off the event loop.

pebble's pool, unlike concurrent.futures', stops one running task by ending
its process (cancel, timeout) and replaces that process, and reports a dead
process as `ProcessExpired` instead of breaking the whole pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pebble

from factq.settings import Settings
from factq.tasks import TaskOutput
from factq.worker.progress import ProgressReporter


class TaskTimedOut(Exception):
    """The task ran past its time limit; its process was ended."""


class PoolProcessLost(Exception):
    """The task's pool process died (killed, out of memory, a crash in C code)."""


class TaskFailed(Exception):
    """The task function raised; the message says what, without the traceback."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


# Set in each pool process by its initializer; the only process-wide state,
# since a pool process serves one job at a time for its whole life.
_reporter: ProgressReporter | None = None


def _init_process(modules: Sequence[str], redis_url: str, namespace: str, worker_pid: int) -> None:
    """Import the task modules and connect for progress reports as the process starts."""
    global _reporter
    _die_with(worker_pid)
    for module in modules:
        importlib.import_module(module)
    _reporter = ProgressReporter(redis_url, namespace)


def _die_with(worker_pid: int) -> None:
    """End this pool process as soon as its worker process is gone, however it went.

    A worker killed with SIGKILL (or by the OOM killer) cannot stop its pool, and
    pebble's processes notice only when they ask for their next task: without
    this, a running task goes on as an orphan for as long as it has left, using
    a core the replacement worker needs, while its job is already redelivered
    to another worker. A thread waits on a pidfd of the
    worker (the parent here is the worker's forkserver, which outlives it, so
    PR_SET_PDEATHSIG would not fire) and ends this process when it exits.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:  # not Linux 5.3+: orphans finish their task, then exit
        return
    try:
        pidfd = pidfd_open(worker_pid)
    except ProcessLookupError:
        os._exit(1)  # the worker is already gone

    def wait_for_worker_exit() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_for_worker_exit, name="factq-die-with-worker", daemon=True).start()


def _ready() -> bool:
    return True


def _run_task(
    function: Callable[..., TaskOutput], kwargs: dict[str, Any], job_id: str
) -> TaskOutput:
    """Call the task function in the pool process, with `report` when it takes one."""
    if _reporter is not None and "report" in inspect.signature(function).parameters:
        kwargs = {**kwargs, "report": _reporter.for_job(job_id)}
    return function(**kwargs)


class TaskPool:
    """A fixed number of processes; `run` awaits one task function's output."""

    def __init__(self, settings: Settings, *, preload: Sequence[str] = ()) -> None:
        processes = settings.concurrency
        # forkserver: pool processes never inherit the event loop's threads
        # or sockets, and a replacement process starts in milliseconds. The
        # forkserver imports this module and the task modules once, before it
        # forks: every pool process shares those pages instead of importing
        # them again into memory of its own.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *preload])
        self._pool = pebble.ProcessPool(
            max_workers=processes,
            initializer=_init_process,
            initargs=(
                tuple(preload),
                settings.redis_url.get_secret_value(),
                settings.namespace,
                os.getpid(),
            ),
            context=context,
        )
        self.processes = processes

    async def start(self) -> None:
        """Start the processes now, so that the first job does not pay for it."""
        await asyncio.wrap_future(self._pool.schedule(_ready))

    async def run(
        self,
        function: Callable[..., TaskOutput],
        kwargs: dict[str, Any],
        *,
        job_id: str,
        timeout_s: float,
    ) -> TaskOutput:
        """Run function(**kwargs) in a pool process; cancelling this ends that process."""
        future = self._pool.schedule(_run_task, args=(function, kwargs, job_id), timeout=timeout_s)
        try:
            output: TaskOutput = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # type: ignore[no-untyped-call]
            raise
        except concurrent.futures.TimeoutError:
            raise TaskTimedOut(f"ran past its time limit of {timeout_s:g} s") from None
        except pebble.ProcessExpired as exc:
            raise PoolProcessLost(f"its pool process died (exit code {exc.exitcode})") from None
        except Exception as exc:
            raise TaskFailed(type(exc).__name__, str(exc) or type(exc).__name__) from exc
        return output

    async def close(self) -> None:
        """End every process; tasks still running are abandoned."""
        self._pool.stop()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(self._pool.join, 10)
