"""Prometheus metrics: every series factq exports, defined here once.

The series are per process, as its loggers are: prometheus-client keeps them
in its default registry, and the code that counts imports the helpers below,
which hand out each label set's child once (no label dict per job). Every
process exports every series; one it never counts stays at 0 (the API's
`factq_worker_jobs_in_flight`, say).

The API serves them at `GET /metrics`, a worker on its own port
(`FACTQ_METRICS_PORT`). Several API processes (`factq api --workers N`) share
one directory, `PROMETHEUS_MULTIPROC_DIR`, which their parent makes for them
before they start: each process writes its values to files there, and
`exposition()` in any of them reads them all, so one scrape gives the sum
over every process (gauges: over the live ones).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# From a small job's few milliseconds to the longest time limit worth running.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip

JOBS_SUBMITTED: Final = Counter(
    "factq_jobs_submitted",
    "Jobs the API accepted (queued, or answered at once from a stored result), by task.",
    ["task"],
)
JOBS_FINISHED: Final = Counter(
    "factq_jobs_finished",
    "Jobs that reached a terminal status, by task and status, counted by the process "
    "whose state change ended each: a worker, or the API (a queued job cancelled, a job "
    "answered at submission, the original design's update route).",
    ["task", "status"],
)
QUEUE_WAIT: Final = Histogram(
    "factq_job_queue_wait_seconds",
    "From a job's submission to its first start (its metrics.queue_s), by task.",
    ["task"],
    buckets=DURATION_BUCKETS,
)
RUN_TIME: Final = Histogram(
    "factq_job_run_seconds",
    "From a job's start to its end (its metrics.run_s), for each job that started, by task.",
    ["task"],
    buckets=DURATION_BUCKETS,
)
JOBS_IN_FLIGHT: Final = Gauge(
    "factq_worker_jobs_in_flight",
    "Jobs this worker holds: running, or waiting in it for a free pool process.",
    multiprocess_mode="livesum",
)
OPEN_STREAMS: Final = Gauge(
    "factq_api_open_streams",
    "Event streams open on the API, by kind (websocket, sse).",
    ["kind"],
    multiprocess_mode="livesum",
)
REJECTED_REQUESTS: Final = Counter(
    "factq_api_rejected_requests",
    "Requests the API refused, by HTTP status and error type (a WebSocket refused for "
    "the same reason counts under the same status).",
    ["status", "reason"],
)
WEBHOOK_ATTEMPTS: Final = Counter(
    "factq_webhook_attempts",
    "Webhook POSTs, by outcome: success (2xx), http_error (another status), "
    "error (no answer: refused, timed out, unreachable).",
    ["outcome"],
)
WEBHOOK_DELIVERIES: Final = Counter(
    "factq_webhook_deliveries",
    "Webhook deliveries ended, by outcome: delivered, or failed (every attempt failed).",
    ["outcome"],
)
REDIS_RECONNECTS: Final = Counter(
    "factq_redis_reconnects",
    "Pub/sub listeners that lost their Redis connection and connected again, by "
    "connection (events: the API's event hub; control: a worker's cancel channel).",
    ["connection"],
)
REDIS_CONNECTION_ERRORS: Final = Counter(
    "factq_redis_connection_errors",
    "Redis commands that failed because Redis could not be reached or did not answer "
    "in time; the connection pool opens a new connection for the next one.",
)
RABBITMQ_RECONNECTS: Final = Counter(
    "factq_rabbitmq_reconnects",
    "Times the RabbitMQ connection was lost and restored (aio-pika's robust connection).",
)

STREAM_KINDS: Final = ("websocket", "sse")
for _kind in STREAM_KINDS:
    # At 0 from the start, rather than missing until the first stream opens.
    OPEN_STREAMS.labels(_kind)


@functools.cache
def jobs_submitted(task: str) -> Counter:
    return JOBS_SUBMITTED.labels(task)


@functools.cache
def jobs_finished(task: str, status: str) -> Counter:
    return JOBS_FINISHED.labels(task, status)


@functools.cache
def queue_wait(task: str) -> Histogram:
    return QUEUE_WAIT.labels(task)


@functools.cache
def run_time(task: str) -> Histogram:
    return RUN_TIME.labels(task)


@functools.cache
def open_streams(kind: str) -> Gauge:
    return OPEN_STREAMS.labels(kind)


@functools.cache
def rejected(status: int, reason: str) -> Counter:
    return REJECTED_REQUESTS.labels(str(status), reason)


@functools.cache
def webhook_attempts(outcome: str) -> Counter:
    return WEBHOOK_ATTEMPTS.labels(outcome)


@functools.cache
def webhook_deliveries(outcome: str) -> Counter:
    return WEBHOOK_DELIVERIES.labels(outcome)


@functools.cache
def redis_reconnects(connection: str) -> Counter:
    return REDIS_RECONNECTS.labels(connection)


def exposition() -> bytes:
    """Every series in the text format: this process's, or under multiprocess mode
    the sum over the processes that share its directory."""
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if not path:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_gone(pid: int) -> None:
    """Under multiprocess mode: the process ended, its live gauges no longer count."""
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def render(metrics: Iterable[Metric]) -> bytes:
    """Series read at scrape time (made by the caller) in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(metrics)))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def serve(port: int) -> Callable[[], None]:
    """Serve this process's series over HTTP on port (every interface), from a
    thread; the function that stops it. OSError when the port is taken."""
    server, thread = start_http_server(port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
