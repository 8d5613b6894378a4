"""Workloads on the submit path: W1 single submissions, W2 batches, W4 `Prefer: wait`.

Each starts its own factq (API and a worker running), drives it with the same
aiohttp client as the floors, and adds its rows, its floor beside each figure.
"""

from __future__ import annotations

import time

from bench.config import Sizes, run_async
from bench.floors import HTTP_CONCURRENCY, Floors
from bench.load import client_session, encoded, job_body, post_concurrently
from bench.procs import cpu_seconds
from bench.service import Inputs, factq_service, pid_of
from bench.table import (
    Row,
    compared,
    cpu_per,
    micros,
    millis,
    per_second,
    percentile,
)
from bench.table import median as median_of

W1_WARMUP = 200
W4_WARMUP = 10
WAIT_HEADER = {"Prefer": "wait=10"}


def _both_cpu(factq: str, floor: float | None) -> str:
    """The load client's CPU per request, in the factq run / in the floor's run."""
    return f"{factq} / {micros(floor) if floor is not None else '-'}"


def single_submissions(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W1: POST /v1/jobs from 64 connections, the worker running; submissions/s."""
    with factq_service(workers=1) as (service, _):
        api = pid_of(service, "api")
        url = f"{service.base_url}/v1/jobs"
        inputs = Inputs()
        rates: list[float] = []
        client_cpu = api_cpu = 0.0
        requests = 0
        unexpected: list[str] = []

        async def drive() -> None:
            nonlocal client_cpu, api_cpu, requests
            async with client_session(connections=HTTP_CONCURRENCY) as http:
                warmup = [encoded(job_body(n)) for n in inputs.take(W1_WARMUP)]
                await post_concurrently(http, url, warmup, HTTP_CONCURRENCY)
                for _ in range(sizes.reps):
                    bodies = [encoded(job_body(n)) for n in inputs.take(sizes.requests)]
                    api_before = cpu_seconds(api)
                    load = await post_concurrently(http, url, bodies, HTTP_CONCURRENCY)
                    api_cpu += cpu_seconds(api) - api_before
                    client_cpu += load.client_cpu_s
                    requests += load.requests
                    rates.append(load.answered(202) / load.seconds)
                    if load.unexpected(202):
                        unexpected.append(load.unexpected(202))

        run_async(drive(), timeout_s)
    rows.append(
        compared(
            "W1",
            f"POST /v1/jobs, {HTTP_CONCURRENCY} connections, worker running: "
            "submissions/s (vs F2 bare FastAPI)",
            median_of(rates),
            floors.http_rate,
            per_second,
            at_least=0.30,
            client_cpu=_both_cpu(cpu_per(client_cpu, requests), floors.http_client_cpu_s),
        )
    )
    rows.append(
        compared(
            "W1",
            "API process CPU per submission (vs F2 server CPU per request)",
            api_cpu / requests if requests else None,
            floors.http_server_cpu_s,
            micros,
        )
    )
    if unexpected:
        rows.append(Row("W1", "answers other than 202", "; ".join(unexpected), meets=False))


def batches(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W2: POST /v1/jobs/batch of 1,000 distinct jobs, one request at a time; jobs/s."""
    with factq_service(workers=1) as (service, _):
        url = f"{service.base_url}/v1/jobs/batch"
        inputs = Inputs()
        rates: list[float] = []
        client_cpu = 0.0
        problems: list[str] = []

        async def drive() -> None:
            nonlocal client_cpu
            async with client_session(connections=1) as http:
                for batch in range(1 + sizes.batches):  # the first warms up
                    body = encoded({"jobs": [job_body(n) for n in inputs.take(1000)]})
                    load = await post_concurrently(http, url, [body], 1)
                    if load.unexpected(202):
                        problems.append(load.unexpected(202))
                    elif batch:
                        rates.append(1000 / load.seconds)
                        client_cpu += load.client_cpu_s

        run_async(drive(), timeout_s)
    rows.append(
        compared(
            "W2",
            "POST /v1/jobs/batch of 1,000, worker running: jobs/s (vs F1 publish rate)",
            median_of(rates),
            floors.publish_rate,
            per_second,
            at_least=0.60,
            client_cpu=cpu_per(client_cpu, len(rates)),
        )
    )
    if problems:
        rows.append(Row("W2", "batches not accepted", "; ".join(problems), meets=False))


def waits(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W4: one tiny job at a time with `Prefer: wait=10`; latency to the finished job."""
    with factq_service(workers=1) as (service, _):
        url = f"{service.base_url}/v1/jobs"
        inputs = Inputs()
        samples: list[float] = []
        client_cpu = 0.0
        not_finished = 0

        async def drive() -> None:
            nonlocal client_cpu, not_finished
            async with client_session(connections=1) as http:
                for i, n in enumerate(inputs.take(W4_WARMUP + sizes.round_trips)):
                    started_cpu = time.process_time()
                    load = await post_concurrently(
                        http, url, [encoded(job_body(n))], 1, WAIT_HEADER
                    )
                    if i < W4_WARMUP:
                        continue
                    client_cpu += time.process_time() - started_cpu
                    samples.append(load.seconds)
                    not_finished += load.requests - load.answered(200)

        run_async(drive(), timeout_s)
    client = cpu_per(client_cpu, len(samples))
    for name, fraction, floor in (
        ("p50", 0.50, floors.round_trip_p50_s),
        ("p99", 0.99, floors.round_trip_p99_s),
    ):
        rows.append(
            compared(
                "W4",
                f"POST /v1/jobs + Prefer: wait=10, one at a time: {name} "
                f"(vs F1 publish+confirm+receive {name})",
                percentile(samples, fraction),
                floor,
                millis,
                at_most=2.5,
                client_cpu=client,
            )
        )
    if not_finished:
        rows.append(
            Row("W4", "waits answered other than 200 (finished)", f"{not_finished}", meets=False)
        )
