"""The process pool on its own: outputs, failures, time limits, cancels and
dead processes, each ending only its own task, the pool serving on after."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from factq.settings import Settings
from factq.worker.pool import PoolProcessLost, TaskFailed, TaskPool, TaskTimedOut
from tests.support import pool_functions
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[TaskPool]:
    pool = TaskPool(settings.model_copy(update={"concurrency": 2}))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def run(pool: TaskPool, function: object, timeout_s: float = 30, **kwargs: object) -> object:
    return await pool.run(function, kwargs, job_id="0" * 32, timeout_s=timeout_s)  # type: ignore[arg-type]


async def replaced_one(pool: TaskPool, before: set[int]) -> None:
    """Wait until the pool is whole again, with one process new beside one of before."""
    await until(lambda: len(pool.process_ids) == 2 and len(pool.process_ids & before) == 1)
    outputs = await asyncio.gather(
        *(run(pool, pool_functions.sleep, seconds=0.2) for _ in range(2))
    )
    assert len(outputs) == 2


async def test_a_task_runs_in_a_pool_process_and_returns_its_output(pool: TaskPool) -> None:
    output = await run(pool, pool_functions.echo, value="hello")
    assert output.summary["value"] == "hello"  # type: ignore[attr-defined]
    assert output.formats == {"text": b"hello"}  # type: ignore[attr-defined]
    assert output.summary["pid"] not in (None, os.getpid())  # type: ignore[attr-defined]


async def test_tasks_beyond_the_processes_wait_their_turn(pool: TaskPool) -> None:
    outputs = await asyncio.gather(
        *(run(pool, pool_functions.echo, value=str(i)) for i in range(50))
    )
    assert [o.summary["value"] for o in outputs] == [str(i) for i in range(50)]  # type: ignore[attr-defined]
    assert len({o.summary["pid"] for o in outputs}) == 2  # type: ignore[attr-defined]


async def test_a_large_output_arrives_whole(pool: TaskPool) -> None:
    output = await run(pool, pool_functions.big, size=20_000_000)
    assert output.formats["bytes"] == b"x" * 20_000_000  # type: ignore[attr-defined]


async def test_a_failing_task_is_reported_with_its_type_and_message(pool: TaskPool) -> None:
    before = pool.process_ids
    with pytest.raises(TaskFailed) as failed:
        await run(pool, pool_functions.fail, message="no such thing")
    assert (failed.value.error_type, failed.value.message) == ("ValueError", "no such thing")
    assert pool.process_ids == before  # a failure ends no process


async def test_an_output_that_cannot_be_sent_back_fails_its_task(pool: TaskPool) -> None:
    with pytest.raises(TaskFailed) as failed:
        await run(pool, pool_functions.unpicklable)
    assert "pickle" in failed.value.error_type.lower() + failed.value.message.lower()
    assert (await run(pool, pool_functions.echo, value="on")).summary["value"] == "on"  # type: ignore[attr-defined]


async def test_a_task_past_its_time_limit_is_ended_and_its_process_replaced(
    pool: TaskPool,
) -> None:
    before = pool.process_ids
    started = asyncio.get_running_loop().time()
    with pytest.raises(TaskTimedOut):
        await run(pool, pool_functions.sleep, timeout_s=0.2, seconds=30)
    assert asyncio.get_running_loop().time() - started < 5
    await replaced_one(pool, before)


async def test_cancelling_a_run_ends_its_process_and_the_pool_serves_on(pool: TaskPool) -> None:
    before = pool.process_ids
    running = asyncio.create_task(run(pool, pool_functions.sleep, seconds=30))
    await until(lambda: pool.idle == 1)  # the task has taken a process
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await replaced_one(pool, before)


async def test_a_process_that_dies_fails_only_its_task(pool: TaskPool) -> None:
    before = pool.process_ids
    beside = asyncio.create_task(run(pool, pool_functions.sleep, seconds=0.5))
    with pytest.raises(PoolProcessLost, match="exit code 3"):
        await run(pool, pool_functions.exit_now, code=3)
    assert (await beside).summary == {"slept": 0.5}  # type: ignore[attr-defined]
    await replaced_one(pool, before)


async def test_a_task_taking_report_gets_one(pool: TaskPool) -> None:
    output = await run(pool, pool_functions.with_report)
    assert output.summary == {"reported": True}  # type: ignore[attr-defined]


async def test_closing_ends_every_process_even_mid_task(settings: Settings) -> None:
    pool = TaskPool(settings.model_copy(update={"concurrency": 2}))
    await pool.start()
    running = asyncio.create_task(run(pool, pool_functions.sleep, seconds=30))
    await until(lambda: pool.idle == 1)  # the task has taken a process
    pids = pool.process_ids
    await pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended and reaped
    with pytest.raises((PoolProcessLost, asyncio.CancelledError)):
        await running
