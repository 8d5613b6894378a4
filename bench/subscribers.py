"""W5: thousands of subscribers on one API process, one socket per queued job: how fast
they connect, what each costs the API while idle (memory, Redis commands), and
how their final events arrive once a worker runs the jobs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import redis.asyncio as redis

from bench.config import Sizes, run_async
from bench.floors import Floors
from bench.load import (
    CONNECT_CONCURRENCY,
    Countdown,
    Followed,
    client_session,
    follow_job,
    submit_batch,
    ws_url,
)
from bench.procs import rss_kib
from bench.service import Inputs, factq_service, pid_of, private_redis
from bench.table import Row, compared, cpu_per, kib, micros, millis, percentile, seconds
from tests.support.service import Service

SUBMIT_BATCH = 1000


async def redis_commands_per_s(client: redis.Redis, window_s: float) -> float:
    """Commands per second the Redis server processed over `window_s` (every client's)."""
    before = (await client.info("stats"))["total_commands_processed"]
    started = time.perf_counter()
    await asyncio.sleep(window_s)
    after = (await client.info("stats"))["total_commands_processed"]
    return float(after - before) / (time.perf_counter() - started)


def _final_wait_s(subscribers: int) -> float:
    return 60.0 + subscribers / 50


def subscribers(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W5: a socket per queued job on one API process; then a worker runs them all.

    On a redis-server of its own unless `--shared-redis`: on the shared one, other
    programs' commands (thousands a second while a test suite runs) swamp the idle count.
    """
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if not sizes.shared_redis:
            overrides["redis_url"] = stack.enter_context(private_redis())
        _subscribers(sizes, floors, rows, timeout_s, overrides)


def _subscribers(
    sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float, overrides: dict[str, Any]
) -> None:
    count = sizes.subscribers
    # Thousands of followers, all from this one address: as many clients would be.
    with factq_service(workers=0, max_streams_per_caller=count + 100, **overrides) as (
        service,
        settings,
    ):

        async def drive() -> None:
            client = redis.Redis.from_url(settings.redis_url.get_secret_value())
            followers: list[asyncio.Task[Followed]] = []
            try:
                async with client_session() as http:
                    job_ids = await _queued_jobs(http, service.base_url, count)
                    baseline = await redis_commands_per_s(client, sizes.idle_s)
                    followers = await _connect(http, service, job_ids, floors, rows)
                    idle = await redis_commands_per_s(client, sizes.idle_s) - baseline
                    _redis_row(rows, idle, baseline, sizes.idle_s, sizes.shared_redis)
                    # Only now do the jobs run: every follower waits for its job's end.
                    service.start_worker()
                    await asyncio.wait(followers, timeout=_final_wait_s(count))
                    _final_rows(rows, count, followers)
            finally:
                for follower in followers:
                    follower.cancel()
                await asyncio.gather(*followers, return_exceptions=True)
                await client.aclose()

        run_async(drive(), timeout_s)


async def _queued_jobs(http: aiohttp.ClientSession, base_url: str, count: int) -> list[str]:
    job_ids: list[str] = []
    inputs = Inputs()
    for start in range(0, count, SUBMIT_BATCH):
        job_ids += await submit_batch(http, base_url, inputs.take(min(SUBMIT_BATCH, count - start)))
    return job_ids


async def _connect(
    http: aiohttp.ClientSession,
    service: Service,
    job_ids: list[str],
    floors: Floors,
    rows: list[Row],
) -> list[asyncio.Task[Followed]]:
    """A follower per job, all connected (or failed): the time it took, the API's memory."""
    api, count = pid_of(service, "api"), len(job_ids)
    connecting, ready = asyncio.Semaphore(CONNECT_CONCURRENCY), Countdown(count)
    before_kib, started_cpu = rss_kib(api), time.process_time()
    started = time.perf_counter()
    followers = [
        asyncio.create_task(
            follow_job(
                http, f"{ws_url(service.base_url)}/v1/jobs/{job_id}/events", connecting, ready
            )
        )
        for job_id in job_ids
    ]
    await ready.done.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    after_kib = rss_kib(api)
    # A follower already done has failed to connect: no job has run yet.
    connected = count - sum(follower.done() for follower in followers)
    _connect_rows(rows, floors, count, connected, elapsed, cpu)
    _memory_row(rows, floors, (after_kib - before_kib) / max(connected, 1))
    return followers


def _connect_rows(
    rows: list[Row], floors: Floors, count: int, connected: int, elapsed: float, cpu: float
) -> None:
    client = f"{cpu_per(cpu, count)} / " + (
        micros(floors.ws_client_cpu_s) if floors.ws_client_cpu_s is not None else "-"
    )
    rows.append(
        compared(
            "W5",
            f"connect {count:,} WS /v1/jobs/{{id}}/events, jobs queued: time to all "
            "(vs F3 bare uvicorn)",
            elapsed,
            floors.ws_connect_s,
            seconds,
            at_most=1.5,
            client_cpu=client,
        )
    )
    if connected < count:
        rows.append(
            Row("W5", "sockets that failed to connect", f"{count - connected}", "-", meets=False)
        )


def _memory_row(rows: list[Row], floors: Floors, per_socket_kib: float) -> None:
    rows.append(
        compared(
            "W5",
            "API memory (RSS) per idle connection (vs F3)",
            per_socket_kib,
            floors.ws_kib_per_socket,
            kib,
            at_most=1.25,
        )
    )


def _redis_row(
    rows: list[Row], idle: float, baseline: float, window_s: float, shared: bool
) -> None:
    server = "the shared Redis" if shared else "factq's own redis-server"
    rows.append(
        Row(
            "W5",
            f"Redis commands/s while the followers idle ({server}, {window_s:g} s, "
            f"minus the {baseline:,.1f}/s baseline before connecting)",
            f"{idle:,.1f}/s",
            target="< 50/s",
            meets=idle < 50,
        )
    )


def _final_rows(rows: list[Row], count: int, tasks: list[asyncio.Task[Followed]]) -> None:
    outcomes = [task.result() for task in tasks if task.done() and not task.cancelled()]
    delays = [o.delay_s for o in outcomes if o.delay_s is not None]
    closed = sum(o.closed_code is not None for o in outcomes)
    codes = sorted({str(o.closed_code) for o in outcomes if o.closed_code is not None})
    rows.append(
        Row(
            "W5",
            "subscribers that got their final event",
            f"{len(delays):,} of {count:,}",
            target="all",
            meets=len(delays) == count,
        )
    )
    p50, p99 = percentile(delays, 0.50), percentile(delays, 0.99)
    rows.append(
        Row(
            "W5",
            "push delay, job's finished_at -> client receipt: p50",
            millis(p50) if p50 is not None else "-",
        )
    )
    rows.append(
        Row(
            "W5",
            "push delay: p99",
            millis(p99) if p99 is not None else "-",
            target="< 100 ms",
            meets=p99 is not None and p99 < 0.1,
        )
    )
    rows.append(
        Row(
            "W5",
            "sockets the server closed before the final event"
            + (f" (codes {', '.join(codes)})" if codes else ""),
            str(closed),
            target="0",
            meets=closed == 0,
        )
    )
