"""W3: many tiny jobs, submitted in batches and followed on multiplexed `/v1/events` sockets,
with the peak memory of every factq process meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.config import Sizes, run_async
from bench.floors import Floors
from bench.load import client_session, submit_batch, until_terminal, ws_url
from bench.procs import PeakSampler, tree_cpu_seconds, tree_pss_kib
from bench.service import Inputs, factq_service, pid_of
from bench.table import Row, compared, cpu_per, micros, per_second
from bench.table import median as median_of

W3_BATCH = 1000
W3_MEMORY_TARGET_MB = 120


def tiny_jobs(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W3: 2,000 tiny jobs as two batches, each followed on its own `/v1/events` socket."""
    with factq_service(workers=1) as (service, _):
        factq = [pid_of(service, "api"), pid_of(service, "worker-0")]
        inputs = Inputs()
        rates: list[float] = []
        failed = 0
        client_cpu = server_cpu = 0.0
        memory = PeakSampler(lambda: tree_pss_kib(factq))

        async def one_run(http: aiohttp.ClientSession) -> None:
            nonlocal failed, client_cpu, server_cpu
            sockets = [
                await http.ws_connect(f"{ws_url(service.base_url)}/v1/events") for _ in range(2)
            ]
            finals: dict[str, dict[str, Any]] = {}

            async def half(socket: aiohttp.ClientWebSocketResponse) -> None:
                job_ids = await submit_batch(http, service.base_url, inputs.take(W3_BATCH))
                await socket.send_json({"subscribe": job_ids})
                await until_terminal(socket, set(job_ids), finals)

            try:
                started_cpu = time.process_time() - memory.cpu_s
                started_server = tree_cpu_seconds(factq)
                started = time.perf_counter()
                await asyncio.gather(*(half(socket) for socket in sockets))
                rates.append(len(finals) / (time.perf_counter() - started))
                server_cpu += tree_cpu_seconds(factq) - started_server
                client_cpu += time.process_time() - memory.cpu_s - started_cpu
                failed += sum(job["status"] != "succeeded" for job in finals.values())
            finally:
                await asyncio.gather(*(socket.close() for socket in sockets))

        async def drive() -> None:
            async with client_session() as http:
                for _ in range(sizes.reps):
                    await one_run(http)

        with memory:
            run_async(drive(), timeout_s)
    jobs = 2 * W3_BATCH * len(rates)
    rows.append(
        compared(
            "W3",
            "2,000 tiny jobs (2 batches), finals on 2 x WS /v1/events: jobs/s (vs F1 publish rate)",
            median_of(rates),
            floors.publish_rate,
            per_second,
            at_least=0.40,
            client_cpu=cpu_per(client_cpu, jobs),
        )
    )
    peak_mb = memory.peak * 1024 / 1e6  # /proc counts in KiB
    rows.append(
        Row(
            "W3",
            "peak PSS of API + worker + its pool during W3",
            f"{peak_mb:.0f} MB",
            target=f"<= {W3_MEMORY_TARGET_MB} MB",
            meets=peak_mb <= W3_MEMORY_TARGET_MB,
        )
    )
    rows.append(
        Row(
            "W3",
            "factq CPU per job (API + worker + pool)",
            micros(server_cpu / jobs) if jobs else "-",
        )
    )
    if failed:
        rows.append(Row("W3", "jobs that did not succeed", str(failed), meets=False))
