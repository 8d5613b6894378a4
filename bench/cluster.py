"""C1-C2: factq on a Redis Cluster (three masters, a replica each) and a three-node
RabbitMQ cluster on loopback (`tests.support.clusters`), started once for both.

C1  submissions, no worker running (the jobs wait in their queues): POST /v1/jobs from
    64 connections (submissions/s, each request's latency), one at a time (latency), and
    batches of 1,000 (jobs/s); on the single local Redis and RabbitMQ (the reference: a
    namespace of its own, deleted after) and on the clusters with
    FACTQ_REDIS_MIN_REPLICAS=0 and =1, the three running at once and measured in turn.
C2  end to end on the clusters (min replicas 1): tiny jobs in two batches, their final
    events on two `/v1/events` sockets, through one API process and one worker with a
    pool of 1, and another pair with a pool of 2, in turn; each process's CPU per job,
    and the cluster servers'.

Memory per WebSocket follower is W5's. Without redis-server or rabbitmq-server, or when
a cluster does not come up, the part is one row that says why it was skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.config import Sizes, log, run_async
from bench.floors import HTTP_CONCURRENCY, Floors
from bench.load import (
    Load,
    client_session,
    encoded,
    job_body,
    post_concurrently,
    submit_batch,
    until_terminal,
    ws_url,
)
from bench.procs import cpu_seconds, tree_cpu_seconds
from bench.service import Inputs, bench_settings, factq_service, pid_of
from bench.table import Row, compared, cpu_per, median, micros, millis, per_second, percentile
from tests.support import clusters
from tests.support.service import Service, running_service

WARMUP: Final = 200
BATCH: Final = 1000
BATCHES: Final = 3  # C1's batches of 1,000 per configuration
SERIAL_TURNS: Final = 3  # C1's one-at-a-time requests, in this many turns
C2_BATCH: Final = 500  # each of C2's two batches per run
C2_WARMUP_BATCH: Final = 100


@dataclass(frozen=True)
class Clusters:
    redis: clusters.RedisCluster
    rabbit: clusters.RabbitCluster

    def settings(self) -> dict[str, Any]:
        """factq's settings for these clusters: every node named, as in a deployment."""
        ports = self.redis.ports
        return {
            "redis_cluster": True,
            "redis_url": ",".join(f"redis://{clusters.HOST}:{port}/0" for port in ports),
            "amqp_url": ",".join(self.rabbit.urls),
            "quorum_initial_group_size": 3,
        }

    def server_pids(self) -> tuple[list[int], list[int]]:
        """The Redis nodes' processes, and the RabbitMQ nodes' (runuser, beam below it)."""
        redis = [n.process.pid for n in self.redis.nodes.values() if n.process is not None]
        rabbit = [n.process.pid for n in self.rabbit.nodes.values() if n.process is not None]
        return redis, rabbit


def on_clusters(sizes: Sizes, floors: Floors, rows: list[Row], timeout_s: float) -> None:
    """C1 and C2 (each when wanted), on one pair of clusters."""
    deadline = time.monotonic() + timeout_s
    with contextlib.ExitStack() as stack:
        try:
            started = time.monotonic()
            nodes = Clusters(
                stack.enter_context(clusters.redis_cluster()),
                stack.enter_context(clusters.rabbit_cluster()),
            )
        except (
            clusters.ClusterUnavailable,
            clusters.ServerExited,
            clusters.CommandFailed,
            TimeoutError,
        ) as exc:
            reason = f"{type(exc).__name__}: {exc}".replace("|", "/").splitlines()[0][:120]
            rows.append(Row("C1", "Redis Cluster and RabbitMQ cluster: skipped", reason))
            return
        log(f"clusters up in {time.monotonic() - started:.1f} s")
        if sizes.wants("C1"):
            _submissions(sizes, nodes, rows, deadline)
        if sizes.wants("C2"):
            _end_to_end(sizes, nodes, rows, deadline)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


@contextmanager
def cluster_service(
    nodes: Clusters, *, workers: int, concurrency: int, **overrides: Any
) -> Iterator[tuple[Service, dict[str, Any]]]:
    """An API and `workers` workers on the clusters; their namespace goes with the clusters."""
    values = {**nodes.settings(), "concurrency": concurrency, **overrides}
    settings = bench_settings(**values)
    with (
        tempfile.TemporaryDirectory(prefix="factq-bench-") as logs,
        running_service(settings, Path(logs), workers=workers, concurrency=concurrency) as service,
    ):
        try:
            yield service, values
        except BaseException:
            log(f"the service's logs, ends:\n{service.log_text()}")
            raise


# C1 ------------------------------------------------------------------------------------


@dataclass
class Submitting:
    """One configuration's submissions."""

    rates: list[float] = field(default_factory=list)  # submissions/s, 64 connections
    loaded: list[float] = field(default_factory=list)  # each request's seconds meanwhile
    serial: list[float] = field(default_factory=list)  # one at a time
    batch_rates: list[float] = field(default_factory=list)  # jobs/s
    requests: int = 0
    api_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    serial_client_cpu_s: float = 0.0
    batch_client_cpu_s: float = 0.0
    unexpected: list[str] = field(default_factory=list)

    def check(self, load: Load, what: str) -> None:
        if load.unexpected(202):
            self.unexpected.append(f"{what}: {load.unexpected(202)}")


class Submitter:
    """Drives one configuration's API, a step at a time, into its `Submitting`."""

    def __init__(self, service: Service, http: aiohttp.ClientSession) -> None:
        self.url = f"{service.base_url}/v1/jobs"
        self.api = pid_of(service, "api")
        self.http = http
        self.inputs = Inputs()
        self.result = Submitting()

    def bodies(self, count: int) -> list[bytes]:
        return [encoded(job_body(n)) for n in self.inputs.take(count)]

    async def warm_up(self) -> None:
        await post_concurrently(self.http, self.url, self.bodies(WARMUP), HTTP_CONCURRENCY)
        body = encoded({"jobs": [job_body(n) for n in self.inputs.take(BATCH)]})
        await post_concurrently(self.http, f"{self.url}/batch", [body], 1)

    async def loaded(self, count: int) -> None:
        """`count` submissions from 64 connections."""
        result, api_before = self.result, cpu_seconds(self.api)
        load = await post_concurrently(
            self.http, self.url, self.bodies(count), HTTP_CONCURRENCY, latencies=result.loaded
        )
        result.api_cpu_s += cpu_seconds(self.api) - api_before
        result.client_cpu_s += load.client_cpu_s
        result.requests += load.requests
        result.rates.append(load.answered(202) / load.seconds)
        result.check(load, "64 connections")

    async def one_at_a_time(self, count: int) -> None:
        load = await post_concurrently(
            self.http, self.url, self.bodies(count), 1, latencies=self.result.serial
        )
        self.result.serial_client_cpu_s += load.client_cpu_s
        self.result.check(load, "one at a time")

    async def batch(self) -> None:
        body = encoded({"jobs": [job_body(n) for n in self.inputs.take(BATCH)]})
        load = await post_concurrently(self.http, f"{self.url}/batch", [body], 1)
        self.result.batch_rates.append(BATCH / load.seconds)
        self.result.batch_client_cpu_s += load.client_cpu_s
        self.result.check(load, "batch")


def _submissions(sizes: Sizes, nodes: Clusters, rows: list[Row], deadline: float) -> None:
    """C1: the reference and the clusters with min replicas 0 and 1, all running at once
    (no worker: the jobs wait in their queues), measured in turn, step by step, so that
    the machine's other load weighs on the three alike."""
    cpus = os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        services = [stack.enter_context(factq_service(workers=0))[0]]
        for replicas in (0, 1):
            running = cluster_service(
                nodes, workers=0, concurrency=cpus, redis_min_replicas=replicas
            )
            services.append(stack.enter_context(running)[0])
        log("C1: submissions on the three in turn ...")
        results = run_async(_submit_in_turn(services, sizes), _left(deadline))
    _submission_rows(rows, *results)


async def _submit_in_turn(services: list[Service], sizes: Sizes) -> list[Submitting]:
    async with contextlib.AsyncExitStack() as stack:
        submitters = []
        for service in services:
            http = await stack.enter_async_context(client_session(connections=HTTP_CONCURRENCY))
            submitters.append(Submitter(service, http))
        for submitter in submitters:
            await submitter.warm_up()
        for _ in range(sizes.reps):
            for submitter in submitters:
                await submitter.loaded(sizes.requests // 2)
        for _ in range(SERIAL_TURNS):
            for submitter in submitters:
                await submitter.one_at_a_time(sizes.round_trips // SERIAL_TURNS)
        for _ in range(BATCHES):
            for submitter in submitters:
                await submitter.batch()
        return [submitter.result for submitter in submitters]


def _against(
    key: str,
    measure: str,
    values: list[float | None],
    show: Callable[[float], str],
    client_cpu: str = "-",
) -> Row:
    """The clusters' two figures (min replicas 0 / 1) beside the reference's, each's ratio."""
    reference, *ours = values

    def shown(value: float | None) -> str:
        return "failed" if value is None else show(value)

    ratios = "-"
    if reference and all(value is not None for value in ours):
        ratios = " / ".join(f"{value / reference:.2f}x" for value in ours if value is not None)
    factq = " / ".join(shown(value) for value in ours)
    return Row(key, measure, factq, shown(reference), ratios, client_cpu=client_cpu)


def _submission_rows(
    rows: list[Row], reference: Submitting, zero: Submitting, one: Submitting
) -> None:
    runs = (reference, zero, one)
    # As the table's column has it: factq's figures (the clusters') first, then the reference's.
    shown = (zero, one, reference)
    clients = " / ".join(cpu_per(run.client_cpu_s, run.requests) for run in shown)
    serial_clients = " / ".join(cpu_per(run.serial_client_cpu_s, len(run.serial)) for run in shown)
    batch_clients = " / ".join(
        cpu_per(run.batch_client_cpu_s, len(run.batch_rates)) for run in shown
    )
    against = "clusters, min replicas 0 / 1 (vs single Redis and RabbitMQ)"
    load = f"POST /v1/jobs, {HTTP_CONCURRENCY} connections, no worker"
    rows += [
        _against("C1", f"{load}: submissions/s, {against}",
                 [median(run.rates) for run in runs], per_second, clients),
        _against("C1", f"{load}: each request's latency p50, {against}",
                 [percentile(run.loaded, 0.50) for run in runs], millis),
        _against("C1", f"{load}: each request's latency p99, {against}",
                 [percentile(run.loaded, 0.99) for run in runs], millis),
        _against("C1", f"API process CPU per submission, {against}",
                 [run.api_cpu_s / run.requests if run.requests else None for run in runs],
                 micros),
        _against("C1", f"POST /v1/jobs one at a time: p50, {against}",
                 [percentile(run.serial, 0.50) for run in runs], millis, serial_clients),
        _against("C1", f"POST /v1/jobs one at a time: p99, {against}",
                 [percentile(run.serial, 0.99) for run in runs], millis, serial_clients),
        _against("C1", f"POST /v1/jobs/batch of 1,000: jobs/s, {against}",
                 [median(run.batch_rates) for run in runs], per_second, batch_clients),
    ]  # fmt: skip
    rows.append(
        compared(
            "C1",
            f"{load}: submissions/s, clusters, min replicas 1 (vs min replicas 0)",
            median(one.rates),
            median(zero.rates),
            per_second,
        )
    )
    for name, run in zip(("single", "min replicas 0", "min replicas 1"), runs, strict=True):
        if run.unexpected:
            rows.append(Row("C1", f"answers other than 202, {name}", "; ".join(run.unexpected)))


# C2 ------------------------------------------------------------------------------------


@dataclass
class EndToEnd:
    """One pool size's runs: jobs/s, and the CPU each process spent on them."""

    rates: list[float] = field(default_factory=list)
    jobs: int = 0
    failed: int = 0
    client_cpu_s: float = 0.0
    # API, worker with its pool, the Redis nodes, the RabbitMQ nodes.
    cpu_s: list[float] = field(default_factory=lambda: [0.0] * 4)

    def per_job(self, index: int) -> float | None:
        return self.cpu_s[index] / self.jobs if self.jobs else None


def _end_to_end(sizes: Sizes, nodes: Clusters, rows: list[Row], deadline: float) -> None:
    """C2: an API and a worker with a pool of 1, another pair with a pool of 2, both on
    the clusters (min replicas 1) at once, their runs in turn."""
    with contextlib.ExitStack() as stack:
        runs: list[tuple[Service, list[list[int]]]] = []
        for concurrency in (1, 2):
            running = cluster_service(
                nodes, workers=1, concurrency=concurrency, redis_min_replicas=1
            )
            service = stack.enter_context(running)[0]
            api, worker = pid_of(service, "api"), pid_of(service, "worker-0")
            runs.append((service, [[api], [worker], *nodes.server_pids()]))
        log("C2: tiny jobs on the two in turn ...")
        results = run_async(_jobs_in_turn(runs, sizes), _left(deadline))
    _end_to_end_rows(rows, *results)


async def _jobs_in_turn(
    runs: list[tuple[Service, list[list[int]]]], sizes: Sizes
) -> list[EndToEnd]:
    inputs = Inputs()
    results = [EndToEnd() for _ in runs]
    async with client_session() as http:
        for service, groups in runs:
            await _one_run(http, service, inputs.take(2 * C2_WARMUP_BATCH), groups, EndToEnd())
        for _ in range(sizes.reps):
            for (service, groups), result in zip(runs, results, strict=True):
                await _one_run(http, service, inputs.take(2 * C2_BATCH), groups, result)
    return results


async def _one_run(
    http: aiohttp.ClientSession,
    service: Service,
    ns: list[int],
    groups: list[list[int]],
    result: EndToEnd,
) -> None:
    """Two batches, each followed on its own `/v1/events` socket, until every job is final."""
    sockets = [await http.ws_connect(f"{ws_url(service.base_url)}/v1/events") for _ in range(2)]
    finals: dict[str, dict[str, Any]] = {}
    half = len(ns) // 2

    async def follow(socket: aiohttp.ClientWebSocketResponse, batch: list[int]) -> None:
        job_ids = await submit_batch(http, service.base_url, batch)
        await socket.send_json({"subscribe": job_ids})
        await until_terminal(socket, set(job_ids), finals)

    try:
        cpu_before = [tree_cpu_seconds(pids) for pids in groups]
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(follow(sockets[0], ns[:half]), follow(sockets[1], ns[half:]))
        result.rates.append(len(finals) / (time.perf_counter() - started))
        result.client_cpu_s += time.process_time() - client_before
        for index, pids in enumerate(groups):
            result.cpu_s[index] += tree_cpu_seconds(pids) - cpu_before[index]
        result.jobs += len(finals)
        result.failed += sum(job["status"] != "succeeded" for job in finals.values())
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets))


def _end_to_end_rows(rows: list[Row], one: EndToEnd, two: EndToEnd) -> None:
    def pair(run: EndToEnd) -> str:
        api, worker = run.per_job(0), run.per_job(1)
        return f"{micros(api) if api else '-'} / {micros(worker) if worker else '-'}"

    def per_core(value: float | None) -> str:
        return per_second(1 / value) if value else "-"

    jobs = f"2 x {C2_BATCH:,} tiny jobs, finals on 2 x WS /v1/events, 1 API + 1 worker"
    clients = f"{cpu_per(two.client_cpu_s, two.jobs)} / {cpu_per(one.client_cpu_s, one.jobs)}"
    redis, rabbit = two.per_job(2), two.per_job(3)
    rows += [
        compared("C2", f"{jobs}, clusters, min replicas 1: jobs/s, pool of 2 (vs pool of 1)",
                 median(two.rates), median(one.rates), per_second, client_cpu=clients),
        Row("C2", "CPU per job, pool of 1: API / worker with its pool", pair(one)),
        Row("C2", "CPU per job, pool of 2: API / worker with its pool", pair(two)),
        Row("C2", "jobs/s per busy core (1 / CPU per job), pool of 2: API / worker with its pool",
            f"{per_core(two.per_job(0))} / {per_core(two.per_job(1))}"),
        Row("C2", "cluster servers' CPU per job, pool of 2: Redis, 6 nodes / RabbitMQ, 3 nodes",
            f"{micros(redis) if redis else '-'} / {micros(rabbit) if rabbit else '-'}"),
    ]  # fmt: skip
    if one.failed or two.failed:
        rows.append(
            Row("C2", "jobs that did not succeed, pool of 1 / 2", f"{one.failed} / {two.failed}")
        )
