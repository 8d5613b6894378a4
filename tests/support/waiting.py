"""Waiting for what a test needs (jobs, conditions, a deadline to pass), always with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import redis.asyncio as redis

from factq.settings import Settings
from factq.state.keys import Keys

TERMINAL = {"succeeded", "failed", "cancelled"}
T = TypeVar("T")


async def wait_for_jobs(
    client: httpx.AsyncClient, job_ids: Iterable[str], *, timeout_s: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Poll until every job is terminal; fail the test past the deadline."""
    pending = set(job_ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for job_id in list(pending):
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in TERMINAL:
                done[job_id] = job
                pending.discard(job_id)
        if pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} jobs still not finished after {timeout_s} s")
            await asyncio.sleep(0.05)
    return done


async def wait_for_job(
    client: httpx.AsyncClient, job_id: str, *, timeout_s: float = 30.0
) -> dict[str, Any]:
    return (await wait_for_jobs(client, [job_id], timeout_s=timeout_s))[job_id]


async def until(predicate: Callable[[], object], *, timeout_s: float = 10.0) -> None:
    """Wait until predicate() is true; fail the test past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s: {predicate}")
        await asyncio.sleep(0.02)


async def until_true(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0) -> None:
    """Wait until await check() is true; fail the test past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s: {check}")
        await asyncio.sleep(0.02)


async def until_past_deadline(settings: Settings, job_id: str, *, timeout_s: float = 10.0) -> None:
    """Wait until Redis's clock, the one a worker's start script reads, is past
    the job's deadline_at; fail the test past the deadline of this wait."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        deadline_at = await client.hget(Keys(settings.namespace).job(job_id), "deadline_at")
        assert deadline_at is not None, f"job {job_id} has no deadline"

        async def is_past() -> bool:
            seconds, microseconds = await client.time()
            return seconds + microseconds / 1e6 > float(deadline_at)

        await until_true(is_past, timeout_s=timeout_s)
    finally:
        await client.aclose()


@asynccontextmanager
async def in_background(coroutine: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run coroutine as a task inside the block; on the way out (a failed wait
    included) cancel it if it still runs, so that no test leaves it behind."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
