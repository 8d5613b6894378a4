"""`cancel_and_wait` ends a task that drops a cancel, as Python 3.11's wait_for
does when what it waits on completes at the same moment."""

from __future__ import annotations

import asyncio
import contextlib

from factq.aio import cancel_and_wait


async def drops_one_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)
    await asyncio.sleep(30)


async def test_a_task_that_drops_a_cancel_is_cancelled_again_until_it_ends() -> None:
    task = asyncio.create_task(drops_one_cancel())
    await asyncio.sleep(0)
    assert await cancel_and_wait({task}, timeout_s=5) == set()
    assert task.cancelled()


async def test_one_cancel_alone_leaves_it_running() -> None:
    """What the helper is for: the plain way leaves such a task behind."""
    task = asyncio.create_task(drops_one_cancel())
    await asyncio.sleep(0)
    task.cancel()
    _, pending = await asyncio.wait({task}, timeout=0.2)
    assert pending == {task}
    await cancel_and_wait({task})


async def test_a_task_that_keeps_dropping_cancels_is_given_back_after_the_timeout() -> None:
    stubborn = True

    async def drops_cancels() -> None:
        while stubborn:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    task = asyncio.create_task(drops_cancels())
    await asyncio.sleep(0)
    assert await cancel_and_wait({task}, timeout_s=0.2) == {task}
    stubborn = False
    assert await cancel_and_wait({task}, timeout_s=5) == set()
