"""The floors: what RabbitMQ, FastAPI, uvicorn and GMP do alone on this machine, measured
in the same run as factq, so that every factq figure has its floor beside it.

F1  aio-pika: publish with confirms to a fresh quorum queue, 2,000 in flight; and
    one message at a time, publish with its confirm then receive it.
F2  a bare FastAPI `POST /v1/jobs` validating factq's JobRequest, under uvicorn.
F3  a bare uvicorn WebSocket app: connect thousands of clients, memory per socket.
F4  factorial with its decimal digits, in this process and in a pool of two.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from uuid import uuid4

import aio_pika
import gmpy2

from bench.bare_apps import serving
from bench.config import Sizes, log, run_async
from bench.load import client_session, close_all, connect_many, encoded, job_body, post_concurrently
from bench.procs import cpu_seconds, rss_kib
from bench.table import Row, compared, median, millis, percentile
from factq.settings import Settings
from factq.tasks.factorial import factorial
from factq.worker.progress import ProgressReporter

HTTP_CONCURRENCY = 64
HTTP_WARMUP_REQUESTS = 500
ROUND_TRIP_WARMUP = 20


@dataclass
class Floors:
    """Every floor's figures; None (or no samples) where one was not measured."""

    publish_rate: float | None = None
    publish_client_cpu_s: float | None = None
    round_trip_p50_s: float | None = None
    round_trip_p99_s: float | None = None
    http_rate: float | None = None
    http_client_cpu_s: float | None = None
    http_server_cpu_s: float | None = None
    ws_connect_s: float | None = None
    ws_kib_per_socket: float | None = None
    ws_client_cpu_s: float | None = None
    # F4's samples, in seconds: factorial(150000), factorial(1000000), 8 x 150000 on 2.
    single_150k: list[float] = field(default_factory=list)
    single_1m: list[float] = field(default_factory=list)
    pool_eight: list[float] = field(default_factory=list)


# F1 ------------------------------------------------------------------------


def _message(n: int) -> aio_pika.Message:
    """A message like factq's own job message, persistent."""
    job_id = secrets.token_hex(16)
    body = encoded({"job_id": job_id, **job_body(n)})
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=job_id,
    )


async def _fresh_queue(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(
        f"bench-floor-{uuid4().hex[:12]}", durable=True, arguments={"x-queue-type": "quorum"}
    )


def broker_floor(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """F1: the publish rate with confirms, and the one-message round trip."""
    run_async(_broker_floor(sizes, floors), timeout_s)


async def _broker_floor(sizes: Sizes, floors: Floors) -> None:
    url = Settings().amqp_url.get_secret_value()
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    queues: list[aio_pika.abc.AbstractQueue] = []
    try:
        channel = await publisher.channel(publisher_confirms=True)
        rates, cpu = [], 0.0
        for _ in range(sizes.reps):
            queues.append(await _fresh_queue(channel))
            rate, rate_cpu = await _publish_rate(channel, queues[-1], sizes.publish_messages)
            rates.append(rate)
            cpu += rate_cpu
        floors.publish_rate = median(rates)
        floors.publish_client_cpu_s = cpu / (sizes.reps * sizes.publish_messages)
        queues.append(await _fresh_queue(channel))
        samples = await _round_trips(channel, consumer, queues[-1], sizes.round_trips)
        floors.round_trip_p50_s = percentile(samples, 0.50)
        floors.round_trip_p99_s = percentile(samples, 0.99)
    finally:
        for queue in queues:
            try:
                await queue.delete(if_unused=False, if_empty=False)
            except aio_pika.exceptions.AMQPError as exc:
                log(f"F1: could not delete queue {queue.name}: {exc}")
        await consumer.close()
        await publisher.close()


async def _publish_rate(
    channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, count: int
) -> tuple[float, float]:
    """Messages/s with every one in flight at once, and the publisher's CPU seconds."""
    messages = [_message(20 + i) for i in range(count)]
    started_cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(
        *(
            channel.default_exchange.publish(m, routing_key=queue.name, mandatory=True)
            for m in messages
        )
    )
    return count / (time.perf_counter() - started), time.process_time() - started_cpu


async def _round_trips(
    channel: aio_pika.abc.AbstractChannel,
    consumer: aio_pika.abc.AbstractConnection,
    queue: aio_pika.abc.AbstractQueue,
    count: int,
) -> list[float]:
    """Seconds from publishing one message (its confirm awaited) to its consumer having it."""
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    consuming = await consumer.channel()
    await consuming.set_qos(prefetch_count=16)
    receiving = await consuming.get_queue(queue.name, ensure=False)
    tag = await receiving.consume(inbox.put)
    samples = []
    try:
        for i in range(ROUND_TRIP_WARMUP + count):
            started = time.perf_counter()
            await channel.default_exchange.publish(
                _message(i), routing_key=queue.name, mandatory=True
            )
            received = await asyncio.wait_for(inbox.get(), 10)
            elapsed = time.perf_counter() - started
            await received.ack()
            if i >= ROUND_TRIP_WARMUP:
                samples.append(elapsed)
    finally:
        # Before the queue goes: RabbitMQ would cancel the consumer itself, noisily.
        await receiving.cancel(tag)
    return samples


# F2 ------------------------------------------------------------------------


def http_floor(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """F2: requests/s of a bare FastAPI POST /v1/jobs, 64 connections."""
    with serving("bench.bare_apps:http_app", factory=True) as (port, pid):
        url = f"http://127.0.0.1:{port}/v1/jobs"

        async def drive() -> None:
            async with client_session(connections=HTTP_CONCURRENCY) as http:
                warmup = [encoded(job_body(20 + i)) for i in range(HTTP_WARMUP_REQUESTS)]
                await post_concurrently(http, url, warmup, HTTP_CONCURRENCY)
                rates, client_cpu, server_cpu, requests = [], 0.0, 0.0, 0
                n = 20 + HTTP_WARMUP_REQUESTS
                for _ in range(sizes.reps):
                    bodies = [encoded(job_body(n + i)) for i in range(sizes.requests)]
                    n += sizes.requests
                    server_before = cpu_seconds(pid)
                    load = await post_concurrently(http, url, bodies, HTTP_CONCURRENCY)
                    server_cpu += cpu_seconds(pid) - server_before
                    if load.unexpected(202):
                        rows.append(Row("F2", "answers other than 202", load.unexpected(202)))
                    rates.append(load.answered(202) / load.seconds)
                    client_cpu += load.client_cpu_s
                    requests += load.requests
                floors.http_rate = median(rates)
                floors.http_client_cpu_s = client_cpu / requests
                floors.http_server_cpu_s = server_cpu / requests

        run_async(drive(), timeout_s)


# F3 ------------------------------------------------------------------------


def websocket_floor(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """F3: connect `subscribers` clients to a bare uvicorn WebSocket app; its memory per socket."""
    times, memory, cpu = [], [], 0.0
    for _ in range(sizes.reps):
        # A fresh server each time: its memory before is that of a server never used.
        with serving("bench.bare_apps:websocket_app") as (port, pid):

            async def connect(port: int = port, pid: int = pid) -> None:
                nonlocal cpu
                async with client_session() as http:
                    before = rss_kib(pid)
                    started_cpu = time.process_time()
                    urls = [f"ws://127.0.0.1:{port}/"] * sizes.subscribers
                    sockets, failures, elapsed = await connect_many(http, urls)
                    cpu += time.process_time() - started_cpu
                    after = rss_kib(pid)
                    try:
                        if failures:
                            failed = ", ".join(f"{v} x {k}" for k, v in failures.items())
                            rows.append(Row("F3", "sockets that failed to connect", failed))
                        times.append(elapsed)
                        memory.append((after - before) / max(len(sockets), 1))
                    finally:
                        await close_all(sockets)

            run_async(connect(), timeout_s)
    floors.ws_connect_s = median(times)
    floors.ws_kib_per_socket = median(memory)
    floors.ws_client_cpu_s = cpu / (sizes.reps * sizes.subscribers)


# F4 ------------------------------------------------------------------------


def factorial_digits(n: int) -> int:
    """n! and its decimal digits, as GMP does them; the count of digits."""
    return len(gmpy2.fac(n).digits(10))


def time_factorial(n: int) -> float:
    """Seconds for factorial_digits(n) in this process."""
    started = time.perf_counter()
    factorial_digits(n)
    return time.perf_counter() - started


def two_processes() -> ProcessPoolExecutor:
    """A pool of two processes, both started and warmed on work of the size measured."""
    pool = ProcessPoolExecutor(2)
    list(pool.map(factorial_digits, [149_000, 149_001]))
    return pool


def time_eight(pool: ProcessPoolExecutor, first_n: int) -> float:
    """Seconds for factorial_digits of 8 consecutive n on the pool."""
    started = time.perf_counter()
    list(pool.map(factorial_digits, range(first_n, first_n + 8)))
    return time.perf_counter() - started


def compute_floor(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """F4 alone (W6 measures it between its own runs, when it runs)."""
    time_factorial(149_000)  # warm
    floors.single_150k += [time_factorial(150_000) for _ in range(sizes.small_reps)]
    floors.single_1m += [time_factorial(1_000_000) for _ in range(sizes.big_reps)]
    with two_processes() as pool:
        floors.pool_eight += [time_eight(pool, 150_000) for _ in range(sizes.reps)]


def progress_cost(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """factq's factorial task (digits in decimal and hex) reporting progress to Redis, and not."""
    settings = Settings(namespace=f"bench-{uuid4().hex[:12]}")
    reporter = ProgressReporter(settings.redis_url.get_secret_value(), settings.namespace)
    plain, reporting = [], []
    for _ in range(sizes.big_reps):
        started = time.perf_counter()
        factorial(1_000_000)
        plain.append(time.perf_counter() - started)
        # A fresh callable each run, so that its throttle lets the reports through.
        # The job does not exist: each report is the script's whole round trip, no write.
        report = reporter.for_job("0" * 32)
        started = time.perf_counter()
        factorial(1_000_000, report)
        reporting.append(time.perf_counter() - started)
    rows.append(
        compared(
            "F4",
            "factq's factorial(1000000) task reporting progress to Redis (vs not reporting)",
            median(reporting),
            median(plain),
            millis,
        )
    )
