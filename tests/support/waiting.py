"""Waiting for jobs, always with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


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
