"""W6: big results into the client's hand (every digit downloaded), each factq run right
after its F4 floor's run on the same n."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.config import Sizes, run_async
from bench.floors import Floors, time_eight, time_factorial, two_processes
from bench.load import (
    JSON_HEADERS,
    client_session,
    encoded,
    job_body,
    submit_batch,
    until_terminal,
    ws_url,
)
from bench.service import factq_service
from bench.table import Row, compared, millis
from bench.table import median as median_of


async def _digits(http: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> int:
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
    async with http.get(f"{base}/v1/jobs/{job['id']}/result") as response:
        body = await response.read()
    if response.status != 200 or len(body) != job["result"]["digits"]:
        raise RuntimeError(f"result of {job['id']}: {response.status}, {len(body)} bytes")
    return len(body)


async def in_hand(
    http: aiohttp.ClientSession,
    base: str,
    socket: aiohttp.ClientWebSocketResponse,
    ns: list[int],
) -> float:
    """Seconds from submitting factorials of `ns` to holding every digit of each."""
    started = time.perf_counter()
    if len(ns) == 1:
        body = encoded(job_body(ns[0]))
        async with http.post(f"{base}/v1/jobs", data=body, headers=JSON_HEADERS) as response:
            answer = await response.json()
            if response.status != 202:
                raise RuntimeError(f"POST /v1/jobs answered {response.status}: {answer}")
            job_ids = [answer["id"]]
    else:
        job_ids = await submit_batch(http, base, ns)
    downloads: list[asyncio.Task[int]] = []
    await socket.send_json({"subscribe": job_ids})
    await until_terminal(
        socket,
        set(job_ids),
        {},
        lambda job: downloads.append(asyncio.create_task(_digits(http, base, job))),
    )
    await asyncio.gather(*downloads)
    return time.perf_counter() - started


async def compat_latency(http: aiohttp.ClientSession, base: str, n: int) -> float:
    """Seconds from GET /factorial?no=n to /factorial/result answering done, with the value."""
    started = time.perf_counter()
    async with http.get(f"{base}/factorial", params={"no": str(n)}) as response:
        job_id = await response.text()
    while True:
        async with http.get(f"{base}/factorial/result", params={"id": job_id}) as response:
            answer = await response.json()
        if answer["status"] == "done" and answer["output"]:
            return time.perf_counter() - started
        if answer["status"] != "processing":
            raise RuntimeError(f"/factorial/result: {answer['status']}")
        await asyncio.sleep(0.005)


def big_jobs(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """W6: 8 x factorial(150000) together, and factorial(1000000), every digit downloaded."""
    eight: list[float] = []
    million: list[float] = []
    single: list[float] = []
    compat: list[float] = []
    with factq_service(workers=1) as (service, _), two_processes() as pool:
        base = service.base_url

        async def drive() -> None:
            # Each factq run right after its floor's run on the same n: whatever else
            # this machine is doing weighs on both alike.
            async with (
                client_session(timeout_s=300) as http,
                http.ws_connect(f"{ws_url(base)}/v1/events") as socket,
            ):
                await in_hand(http, base, socket, [149_000, 149_001])  # warm the pool
                await asyncio.to_thread(time_factorial, 149_000)  # and this process
                for rep in range(sizes.reps):
                    ns = list(range(150_000 + 8 * rep, 150_008 + 8 * rep))
                    floors.pool_eight.append(await asyncio.to_thread(time_eight, pool, ns[0]))
                    eight.append(await in_hand(http, base, socket, ns))
                for rep in range(sizes.big_reps):
                    n = 1_000_000 - rep
                    floors.single_1m.append(await asyncio.to_thread(time_factorial, n))
                    million.append(await in_hand(http, base, socket, [n]))
                for rep in range(sizes.small_reps):
                    n = 150_100 + rep
                    floors.single_150k.append(await asyncio.to_thread(time_factorial, n))
                    single.append(await in_hand(http, base, socket, [n]))
                for rep in range(sizes.reps):
                    compat.append(await compat_latency(http, base, 150_200 + rep))

        try:
            run_async(drive(), timeout_s)
        finally:
            _big_rows(rows, floors, eight, million, single, compat)


def _big_rows(
    rows: list[Row],
    floors: Floors,
    eight: list[float],
    million: list[float],
    single: list[float],
    compat: list[float],
) -> None:
    f150, f1m = median_of(floors.single_150k), median_of(floors.single_1m)
    rows.append(
        compared(
            "W6",
            "8 x factorial(150000) submitted together -> all digits downloaded "
            "(vs F4 8 x 150000! on a pool of 2)",
            median_of(eight),
            median_of(floors.pool_eight),
            millis,
            at_most=1.5,
        )
    )
    rows.append(
        compared(
            "W6",
            "factorial(1000000) submitted -> all digits downloaded (vs F4 1000000!)",
            median_of(million),
            f1m,
            millis,
            at_most=1.2,
        )
    )
    rows.append(
        compared(
            "W6",
            "factorial(150000) alone, submitted -> all digits downloaded (vs F4 150000!)",
            median_of(single),
            f150,
            millis,
        )
    )
    rows.append(
        compared(
            "W6",
            "GET /factorial?no=150000 -> /factorial/result done, the value in it (vs F4)",
            median_of(compat),
            f150,
            millis,
        )
    )
