"""Ending tasks for sure.

On Python 3.11, `asyncio.wait_for` returns its result, and drops the cancel,
when the cancel arrives just as what it waits on completes; redis-py waits
that way on every write. A task cancelled at that moment runs on, and a
`gather` of it waits for ever. `cancel_and_wait` cancels again until the
tasks have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

# How long a cancelled task gets before it is cancelled again.
RECANCEL_AFTER_S: Final = 0.05


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], timeout_s: float | None = None
) -> set[asyncio.Future[Any]]:
    """Cancel the tasks and wait until they have ended, cancelling again those
    that ran on; the ones still running after timeout_s (None: no limit)."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        wait_s = RECANCEL_AFTER_S
        if deadline is not None:
            wait_s = min(wait_s, deadline - loop.time())
            if wait_s <= 0:
                break
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    return pending
