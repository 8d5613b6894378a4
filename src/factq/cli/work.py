"""Running a worker: `factq worker`, once the CLI parsed it.

A module of its own so that a worker process imports what a worker needs
and nothing of the web stack (FastAPI, uvicorn): less memory per process.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from factq.settings import Settings


def run_worker(settings: Settings) -> int:
    """Consume until SIGINT or SIGTERM, then finish held jobs within the grace period.

    On uvloop where it is installed (uvicorn[standard] brings it, and the API
    runs on it too): its event loop costs the worker less CPU per job.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_work(settings))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _work(settings: Settings) -> int:
    from factq.worker import Worker

    async with Worker(settings) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
    return 0
