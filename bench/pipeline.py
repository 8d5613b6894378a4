"""Pipeline figures on this machine: latency from submit to done, and throughput.

Starts its own `factq api` and `factq worker` in a fresh namespace on the local
Redis and RabbitMQ, and prints a table of medians. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import gmpy2
import httpx

from factq.settings import Settings
from factq.tasks.factorial import factorial
from factq.worker.progress import ProgressReporter
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import running_service

TERMINAL = {"succeeded", "failed", "cancelled"}


async def until_done(poll: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    deadline = time.perf_counter() + timeout_s
    while not await poll():
        if time.perf_counter() > deadline:
            raise TimeoutError("job did not finish")
        await asyncio.sleep(0.002)


async def compat_latency(http: httpx.AsyncClient, n: int) -> float:
    """Seconds from GET /factorial to /factorial/result answering done (with the value)."""
    started = time.perf_counter()
    job_id = (await http.get("/factorial", params={"no": str(n)})).text

    async def done() -> bool:
        response = await http.get("/factorial/result", params={"id": job_id})
        return bool(response.json()["status"] == "done")

    await until_done(done)
    return time.perf_counter() - started


async def v1_latency(http: httpx.AsyncClient, n: int) -> float:
    """Seconds from POST /v1/jobs to GET /v1/jobs/{id} answering succeeded."""
    started = time.perf_counter()
    response = await http.post("/v1/jobs", json={"task": "factorial", "input": {"n": n}})
    job_id = response.json()["id"]

    async def done() -> bool:
        return bool((await http.get(f"/v1/jobs/{job_id}")).json()["status"] in TERMINAL)

    await until_done(done)
    return time.perf_counter() - started


async def batch_throughput(http: httpx.AsyncClient, inputs: list[int]) -> float:
    """Jobs per second for a batch of small jobs, from submit until the last one is done."""
    jobs = len(inputs)
    started = time.perf_counter()
    body = {"jobs": [{"task": "factorial", "input": {"n": n}} for n in inputs]}
    ids = [job["id"] for job in (await http.post("/v1/jobs/batch", json=body)).json()["jobs"]]
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            if (await http.get(f"/v1/jobs/{job_id}")).json()["status"] in TERMINAL:
                pending.discard(job_id)
    return jobs / (time.perf_counter() - started)


def compute_only(n: int, report: Callable[[float], None] | None = None) -> float:
    started = time.perf_counter()
    factorial(n, report)
    return time.perf_counter() - started


def progress_cost(settings: Settings, n: int, runs: int) -> tuple[str, str, str]:
    """factorial(n) reporting progress to Redis against not reporting, alternated."""
    reporter = ProgressReporter(settings.redis_url.get_secret_value(), settings.namespace)
    plain, reporting = [], []
    for _ in range(runs):
        plain.append(compute_only(n))
        # A fresh callable each run, so the throttle lets the reports through.
        reporting.append(compute_only(n, reporter.for_job("0" * 32)))
    ratio = statistics.median(reporting) / statistics.median(plain)
    return (
        f"factorial({n}) with progress reports vs without",
        median_ms(reporting),
        f"{ratio:.2f}x",
    )


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms"


async def measure(
    settings: Settings, base_url: str, runs: int, n: int
) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        # Each run on another n, so that no stored result answers it (factorial
        # is deterministic: an identical job reuses the first one's result).
        await compat_latency(http, n - 1)  # warm up the pool processes
        compat = [await compat_latency(http, n + i) for i in range(runs)]
        v1 = [await v1_latency(http, n + runs + i) for i in range(runs)]
        again = [await v1_latency(http, n) for _ in range(runs)]
        compute = [compute_only(n) for _ in range(runs)]
        rows.append(
            (f"compute only: factorial({n}) + digits, in-process", median_ms(compute), "1.0x")
        )
        ratio = statistics.median(compat) / statistics.median(compute)
        rows.append((f"GET /factorial?no={n} -> result done", median_ms(compat), f"{ratio:.1f}x"))
        ratio = statistics.median(v1) / statistics.median(compute)
        rows.append((f"POST /v1/jobs n={n} -> succeeded", median_ms(v1), f"{ratio:.1f}x"))
        ratio = statistics.median(again) / statistics.median(compute)
        rows.append((f"... n={n} again (the stored result)", median_ms(again), f"{ratio:.2f}x"))
        rows.append(progress_cost(settings, 1_000_000, max(3, runs // 3)))
        start = 1000
        distinct = []
        for _ in range(3):
            distinct.append(await batch_throughput(http, list(range(start, start + 1000))))
            start += 1000
        rows.append(
            (
                "batch of 1000 distinct factorials (n ~ 1000-4000), jobs/s",
                f"{statistics.median(distinct):.0f}",
                "",
            )
        )
        identical = [await batch_throughput(http, [100] * 1000) for _ in range(3)]
        rows.append(
            (
                "batch of 1000 x factorial(100), one computation, jobs/s",
                f"{statistics.median(identical):.0f}",
                "",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--n", type=int, default=150_000)
    args = parser.parse_args()
    assert gmpy2.fac(10).digits() == "3628800"
    settings = make_settings(task_modules="")
    try:
        with (
            tempfile.TemporaryDirectory() as logs,
            running_service(
                settings, Path(logs), workers=1, concurrency=os.cpu_count() or 1
            ) as service,
        ):
            rows = asyncio.run(measure(settings, service.base_url, args.runs, args.n))
    finally:
        asyncio.run(delete_namespace(settings))
    print(f"\nfactq pipeline on {os.cpu_count()} cores, medians of {args.runs} runs\n")
    width = max(len(row[0]) for row in rows)
    print(f"| {'measure'.ljust(width)} | {'median':>8} | {'vs compute':>10} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 12}|")
    for name, value, ratio in rows:
        print(f"| {name.ljust(width)} | {value:>8} | {ratio:>10} |")


if __name__ == "__main__":
    main()
