"""The process pool that runs task functions, off the event loop.

Each pool process serves one task at a time over a socket pair that the
worker's event loop reads and writes itself: no threads in the worker, so a
task costs one message each way. Stopping one running task (a cancel, its
time limit) ends its process, and a new one takes its place; a process that
dies on its own (killed, out of memory, a crash in C code) fails only the task
it ran, as `PoolProcessLost`, and is replaced the same way.

Pool processes are forked from the worker's forkserver, which imports this
module and the task modules once: every pool process shares those pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from factq.logs import configure_logging, log_context
from factq.settings import LogFormat, LogLevel, Settings
from factq.tasks import TaskOutput
from factq.worker.progress import ProgressReporter

logger = logging.getLogger(__name__)

# A process that has not said it is ready (its task modules imported, its
# models loaded, its Redis client made) within this long is ended, and the
# pool start fails.
START_TIMEOUT_S: Final = 300.0
# How long an ended process may take to be reaped before it is left to init.
EXIT_WAIT_S: Final = 5.0
# Each message: its length (as multiprocessing.Connection frames it), then a pickle.
_LENGTH: Final = struct.Struct("!i")
_LONG_LENGTH: Final = struct.Struct("!Q")
# Set in each pool process, unless set already, to its share of the cores.
THREAD_VARIABLES: Final = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class TaskTimedOut(Exception):
    """The task ran past its time limit; its process was ended."""


class PoolProcessLost(Exception):
    """The task's pool process died (killed, out of memory, a crash in C code)."""


class TaskNotLoaded(Exception):
    """A pool process could not load the model of a task: the reason, by task."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in failures.items()))
        self.failures = dict(failures)


class TaskFailed(Exception):
    """The task function raised; the message says what, without the traceback."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


# Set in each pool process as it starts; the only process-wide state, since a
# pool process serves one job (or one batch) at a time for its whole life.
_reporter: ProgressReporter | None = None
# The value of each task's `load()`, by task name, made as the process starts.
_models: dict[str, Any] = {}

# What the worker sends: the function, the task whose model it gets (if any),
# its input (a list of inputs for a batch), the job ids, and whether batched.
Request = tuple[Callable[..., Any], str | None, Any, tuple[str, ...], bool]


def _serve(
    connection: Connection,
    modules: Sequence[str],
    loads: Mapping[str, Callable[[], Any]],
    threads: int,
    redis_url: str,
    redis_cluster: bool,
    namespace: str,
    worker_pid: int,
    log_setup: tuple[LogLevel, LogFormat],
) -> None:
    """A pool process: start, load each task's model, say which could not
    load, then run each task sent until the worker closes its end."""
    global _reporter
    configure_logging(*log_setup)  # its lines in its worker's format
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the worker, which ends us
    _die_with(worker_pid)
    # The cores are shared among the pool's processes: a numeric library that
    # reads these (PyTorch, OpenBLAS) starts no more threads than its share.
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))
    for module in modules:
        importlib.import_module(module)
    failures: dict[str, str] = {}
    for task_name, load in loads.items():
        try:
            _models[task_name] = load()
        except Exception as exc:
            failures[task_name] = _describe(exc)
    _reporter = ProgressReporter(redis_url, namespace, cluster=redis_cluster)
    connection.send_bytes(pickle.dumps(failures))
    while True:
        try:
            request: Request = pickle.loads(connection.recv_bytes())
        except EOFError:
            return
        try:
            reply = pickle.dumps((True, _run(*request)), protocol=5)
        except Exception as exc:  # the task's failure, or an output that does not pickle
            reply = pickle.dumps((False, _failure(exc)))
        connection.send_bytes(reply)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"


def _failure(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc) or type(exc).__name__


def _die_with(worker_pid: int) -> None:
    """End this pool process as soon as its worker process is gone, however it went.

    A worker killed with SIGKILL (or by the OOM killer) cannot stop its pool:
    without this, a running task goes on as an orphan for as long as it has
    left, using a core the replacement worker needs, while its job is already
    redelivered to another worker. A thread waits on a pidfd of the worker (the
    parent here is the worker's forkserver, which outlives it, so
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


def _run(
    function: Callable[..., Any],
    model_of: str | None,
    payload: Any,
    job_ids: tuple[str, ...],
    batched: bool,
) -> Any:
    """Call the task function in the pool process, with `report` when it takes
    one and `model` when its task loads one."""
    extras: dict[str, Any] = {}
    if _reporter is not None and "report" in inspect.signature(function).parameters:
        extras["report"] = _reporter.for_jobs(job_ids)
    if model_of is not None:
        extras["model"] = _models[model_of]
    if not batched:
        with log_context(job_id=job_ids[0]):
            return function(**payload, **extras)
    return _run_batch(function, payload, extras)


def _run_batch(
    function: Callable[..., Any], inputs: list[dict[str, Any]], extras: dict[str, Any]
) -> list[tuple[bool, Any]]:
    """Each input's (ok, output) or (False, failure): one call for them all; if
    that call fails, one call for each, so that only a failing input fails."""
    try:
        outputs = list(function(inputs, **extras))
        if len(outputs) != len(inputs):
            raise ValueError(f"{len(outputs)} outputs for {len(inputs)} inputs")
    except Exception as exc:
        if len(inputs) == 1:
            return [(False, _failure(exc))]
        return [_run_batch(function, [one], extras)[0] for one in inputs]
    return [
        (False, _failure(output)) if isinstance(output, BaseException) else (True, output)
        for output in outputs
    ]


class _Lost(Exception):
    """The process's socket closed: it died."""


class _Process:
    """One pool process and the worker's end of its socket pair."""

    def __init__(
        self,
        process: BaseProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self._reader = reader
        self._writer = writer
        self._code: int | None = None
        self._reaping: asyncio.Future[None] | None = None
        self._ended = False

    @classmethod
    async def start(
        cls, context: multiprocessing.context.BaseContext, initargs: tuple[Any, ...]
    ) -> _Process:
        ours, theirs = socket.socketpair()
        # The process gets its own copy of this end as it starts; ours closes here.
        with Connection(theirs.detach()) as child_end:
            process = context.Process(  # type: ignore[attr-defined]
                target=_serve, args=(child_end, *initargs), name="factq-pool", daemon=True
            )
            try:
                process.start()
            except BaseException:
                ours.close()
                raise
        reader, writer = await asyncio.open_connection(sock=ours)
        started = cls(process, reader, writer)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                failures: dict[str, str] = pickle.loads(await started._receive())
        except _Lost:
            code = await started.exit_code()
            await started.end()
            raise PoolProcessLost(f"a pool process died as it started (exit code {code})") from None
        except BaseException:
            await started.end()
            raise
        if failures:
            await started.end()
            raise TaskNotLoaded(failures)
        return started

    async def call(self, request: bytes) -> Any:
        """Send one task; its reply, once the process has run it."""
        try:
            self._writer.write(_LENGTH.pack(len(request)) + request)
            await self._writer.drain()
        except ConnectionError as exc:
            raise _Lost from exc
        return pickle.loads(await self._receive())

    async def _receive(self) -> bytes:
        try:
            (size,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
            if size == -1:  # over 2 GiB: a 64-bit length follows
                (size,) = _LONG_LENGTH.unpack(await self._reader.readexactly(_LONG_LENGTH.size))
            return await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _Lost from exc

    async def exit_code(self) -> int | None:
        """The process's exit code, once it has exited (None if it outlives the wait)."""
        if self._code is None:
            if self._reaping is None:
                self._reaping = asyncio.ensure_future(self._reap())
            await asyncio.shield(self._reaping)
        return self._code

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        sentinel = self.process.sentinel

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(sentinel, readable)
        try:
            async with asyncio.timeout(EXIT_WAIT_S):
                await exited
        except TimeoutError:
            return
        finally:
            loop.remove_reader(sentinel)
        self._code = self.process.exitcode

    async def end(self) -> None:
        """Kill the process (it may be mid-task), and reap it; once."""
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self._writer.close()
        if await self.exit_code() is not None:
            self.process.close()


class TaskPool:
    """A fixed number of processes; `run` awaits one task function's output,
    `run_batch` one output (or failure) for each of several inputs."""

    def __init__(
        self,
        settings: Settings,
        *,
        preload: Sequence[str] = (),
        loads: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.processes = settings.concurrency
        # forkserver: pool processes never inherit the event loop's sockets,
        # and a replacement starts in milliseconds. It imports this module and
        # the task modules once, before it forks: every pool process shares
        # those pages instead of importing them into memory of its own.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__, *preload])
        self._preload = tuple(preload)
        self._loads = dict(loads or {})
        self._settings = settings
        self._idle: asyncio.Queue[_Process] = asyncio.Queue()
        self._all: set[_Process] = set()
        self._replacing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def process_ids(self) -> set[int]:
        """The pids of the pool's live processes (fewer while one is replaced)."""
        return {process.process.pid for process in self._all if process.process.pid is not None}

    @property
    def idle(self) -> int:
        """Processes free for a task now."""
        return self._idle.qsize()

    @property
    def loaded(self) -> set[str]:
        """The tasks whose model every process has loaded."""
        return set(self._loads)

    async def start(self) -> dict[str, str]:
        """Start the processes now, so that the first job does not pay for it.

        Each loads the model of every task given in `loads`; a task whose load
        fails is left out (its reason returned, by task name), and no process
        of this pool loads it again.
        """
        failed: dict[str, str] = {}
        while True:
            try:
                await self._add()
                break
            except TaskNotLoaded as exc:
                failed.update(exc.failures)
                self._loads = {
                    name: load for name, load in self._loads.items() if name not in exc.failures
                }
        for _ in range(self.processes - 1):
            await self._add()
        return failed

    async def run(
        self,
        function: Callable[..., TaskOutput],
        kwargs: dict[str, Any],
        *,
        job_id: str,
        timeout_s: float,
        model_of: str | None = None,
    ) -> TaskOutput:
        """Run function(**kwargs) in a pool process; cancelling this ends that process."""
        ok, value = await self._call((function, model_of, kwargs, (job_id,), False), timeout_s)
        if not ok:
            raise TaskFailed(*value)
        output: TaskOutput = value
        return output

    async def run_batch(
        self,
        function: Callable[..., Any],
        inputs: list[dict[str, Any]],
        *,
        job_ids: Sequence[str],
        timeout_s: float,
        model_of: str | None = None,
    ) -> list[TaskOutput | TaskFailed]:
        """Run function(inputs) in one pool process: each input's output, or its
        `TaskFailed`. Cancelling this ends that process."""
        request: Request = (function, model_of, inputs, tuple(job_ids), True)
        ok, value = await self._call(request, timeout_s)
        if not ok:  # the outputs did not pickle
            return [TaskFailed(*value) for _ in inputs]
        return [output if item_ok else TaskFailed(*output) for item_ok, output in value]

    async def _call(self, request: Request, timeout_s: float) -> tuple[bool, Any]:
        message = pickle.dumps(request, protocol=5)
        process = await self._idle.get()
        try:
            async with asyncio.timeout(timeout_s):
                reply: tuple[bool, Any] = await process.call(message)
        except TimeoutError:
            self._replace(process)
            raise TaskTimedOut(f"ran past its time limit of {timeout_s:g} s") from None
        except _Lost:
            code = await process.exit_code()
            self._replace(process)
            raise PoolProcessLost(f"its pool process died (exit code {code})") from None
        except BaseException:
            # Cancelled mid-task: the only way to stop it is to end its process.
            self._replace(process)
            raise
        self._idle.put_nowait(process)
        return reply

    async def close(self) -> None:
        """End every process; tasks still running are abandoned."""
        self._closed = True
        await asyncio.gather(*self._replacing, return_exceptions=True)
        await asyncio.gather(*(process.end() for process in list(self._all)))
        self._all.clear()

    async def _add(self) -> None:
        settings = self._settings
        initargs = (
            self._preload,
            self._loads,
            max(1, (os.cpu_count() or 1) // self.processes),
            settings.redis_url.get_secret_value(),
            settings.redis_cluster,
            settings.namespace,
            os.getpid(),
            (settings.log_level, settings.log_format),
        )
        process = await _Process.start(self._context, initargs)
        if self._closed:
            await process.end()
            return
        self._all.add(process)
        self._idle.put_nowait(process)

    def _replace(self, process: _Process) -> None:
        """End the process and start another in its place, in the background."""
        self._all.discard(process)
        task = asyncio.ensure_future(self._replace_now(process))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace_now(self, process: _Process) -> None:
        await process.end()
        while not self._closed:
            try:
                await self._add()
                return
            except Exception:
                logger.exception("a pool process could not start; trying again")
                await asyncio.sleep(1.0)
