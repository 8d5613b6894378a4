"""The process pool that runs task functions, off the event loop.

pebble's pool, unlike concurrent.futures', stops one running task by ending
its process (cancel, timeout) and replaces that process, and reports a dead
process as `ProcessExpired` instead of breaking the whole pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import pebble

from factq.tasks import TaskOutput


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


def _preload(modules: Sequence[str]) -> None:
    """Import the task modules as each pool process starts, not during its first job."""
    for module in modules:
        importlib.import_module(module)


def _ready() -> bool:
    return True


class TaskPool:
    """A fixed number of processes; `run` awaits one task function's output."""

    def __init__(self, processes: int, *, preload: Sequence[str] = ()) -> None:
        # forkserver: pool processes never inherit the event loop's threads
        # or sockets, and a replacement process starts in milliseconds.
        self._pool = pebble.ProcessPool(
            max_workers=processes,
            initializer=_preload,
            initargs=(tuple(preload),),
            context=multiprocessing.get_context("forkserver"),
        )
        self.processes = processes

    async def start(self) -> None:
        """Start the processes now, so that the first job does not pay for it."""
        await asyncio.wrap_future(self._pool.schedule(_ready))

    async def run(
        self, function: Callable[..., TaskOutput], kwargs: dict[str, Any], *, timeout_s: float
    ) -> TaskOutput:
        """Run function(**kwargs) in a pool process; cancelling this ends that process."""
        future = self._pool.schedule(function, kwargs=kwargs, timeout=timeout_s)
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
