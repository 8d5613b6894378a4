"""Never lose a job: hundreds of jobs through real `factq api` and `factq worker`
processes while workers are SIGKILLed, RabbitMQ restarts and Redis is SIGKILLed and
restarted on its AOF. Every accepted job must end succeeded, exactly once, with
its right result; the API must answer 503 with Retry-After, never 500 or hang;
the service must recover on its own.

FACTQ_FAULT_SEED picks the order and timing of the faults (a random seed
otherwise, printed with the figures); scripts/soak.sh runs 20 seeds.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from factq.settings import Settings
from factq.state.keys import Keys
from tests.faults.chaos import Chaos, ensure_rabbitmq_running, plan_faults
from tests.faults.checks import (
    check_jobs,
    check_live_events,
    count_completed_twice,
    count_executions,
    count_jobs_made,
    wait_for_recovery,
    wait_until_final,
)
from tests.faults.figures import Figures
from tests.faults.load import REQUEST_TIMEOUT_S, ApiAnswers, Submitter, probe
from tests.support.redis_server import RedisServer
from tests.support.service import Service, running_service_reaped
from tests.support.summary import RecordProperty

pytestmark = [pytest.mark.faults, pytest.mark.alone, pytest.mark.timeout(300)]

JOBS = 500
MAX_JOBS = 1000
RATE_PER_S = 12.0
WORKERS = 3
CONCURRENCY = 2
WORKER_KILLS = 5  # while the services are up; a kill during an outage comes on top
# Kills that must land on a worker that has just begun a job (it seeks one for 2 s).
MID_JOB_KILLS = 4


def fault_seed() -> int:
    value = os.environ.get("FACTQ_FAULT_SEED")
    return int(value) if value else random.SystemRandom().randrange(1_000_000)


@pytest.fixture
def service(fault_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """One API and WORKERS workers; on exit every process they started is gone too,
    and RabbitMQ runs."""
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        with running_service_reaped(
            fault_settings, logs, workers=WORKERS, concurrency=CONCURRENCY
        ) as service:
            yield service
    finally:
        ensure_rabbitmq_running()


async def test_no_accepted_job_is_lost_or_completed_twice_under_faults(
    service: Service,
    private_redis: RedisServer,
    fault_settings: Settings,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    seed = fault_seed()
    figures = Figures(seed=seed)
    started = time.monotonic()
    log = str(tmp_path / "executions.log")
    names = Keys(fault_settings.namespace)
    made_twice: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=service.base_url, timeout=REQUEST_TIMEOUT_S) as http:
        submitter = Submitter(
            http,
            log,
            random.Random(f"{seed}-load"),
            ApiAnswers(),
            jobs=JOBS,
            rate_per_s=RATE_PER_S,
            max_jobs=MAX_JOBS,
        )
        chaos = Chaos(
            service, private_redis, random.Random(f"{seed}-victims"), log, submitter.sleep_by_tag
        )
        try:
            await run_under_faults(http, submitter, chaos, seed)
            await wait_for_recovery(http, fault_settings, private_redis.url, service, chaos)
            async with redis.Redis.from_url(private_redis.url) as client:
                statuses = await wait_until_final(client, names, list(submitter.accepted))
                figures.completed_twice = await count_completed_twice(
                    client, names, list(submitter.accepted), figures.problems
                )
                made_twice = await count_jobs_made(client, names, submitter.accepted)
            attempts = await check_jobs(http, submitter.accepted, statuses, figures)
            figures.submissions_made_twice = len(made_twice)
            count_executions(log, submitter, chaos, attempts, made_twice, figures)
            await check_live_events(http, log)
        finally:
            fill_in(figures, submitter, chaos, service, started, made_twice)
            report(figures, chaos, submitter, record_property)
    assert not figures.problems, f"{figures.table()}\n\n" + "\n".join(
        [*figures.problems[:50], "", service.log_text()]
    )


async def run_under_faults(
    http: httpx.AsyncClient, submitter: Submitter, chaos: Chaos, seed: int
) -> None:
    """Submit at a steady rate while the faults happen, until both are over."""
    keep_going = asyncio.Event()
    keep_going.set()
    stop_probing = asyncio.Event()
    faults = asyncio.create_task(chaos.run(plan_faults(seed, worker_kills=WORKER_KILLS)))
    faults.add_done_callback(lambda _: keep_going.clear())
    probing = asyncio.create_task(
        probe(http, submitter, stop_probing, lambda: chaos.redis_restarts)
    )
    try:
        await submitter.run(keep_going)
        await faults
    finally:
        # A fault in progress (a thread) completes: RabbitMQ and Redis are left running.
        chaos.stop()
        stop_probing.set()
        await asyncio.wait({faults, probing}, timeout=180)


def fill_in(
    figures: Figures,
    submitter: Submitter,
    chaos: Chaos,
    service: Service,
    started: float,
    made_twice: dict[str, int],
) -> None:
    """The figures from what happened; what the contract forbids, as problems."""
    answers = submitter.answers
    figures.jobs = len(submitter.accepted)
    figures.worker_kills = chaos.worker_kills
    figures.kills_mid_job = chaos.kills_mid_job
    figures.rabbitmq_restarts = chaos.rabbitmq_restarts
    figures.redis_restarts = chaos.redis_restarts
    figures.answers_503 = sum(n for key, n in answers.counts.items() if key.endswith(" 503"))
    figures.answers_503_redis_back = answers.refused_once_redis_back
    figures.slowest_503_s = round(answers.slowest_503_s, 2)
    figures.orphans = len(chaos.orphans)
    figures.runtime_s = round(time.monotonic() - started, 1)
    # A batch answered 503 may still run (its publish was cut off, and Redis was
    # down too, so its jobs could not be discarded): a figure. A retry with the
    # same Idempotency-Key must never make a second job.
    figures.problems += answers.violations + chaos.problems
    figures.problems += [
        f"{tag}: its Idempotency-Key made {made} jobs" for tag, made in made_twice.items()
    ]
    figures.problems += [f"outlived its killed worker: {orphan}" for orphan in chaos.orphans]
    for name, process in service.processes.items():
        if name not in chaos.killed and process.poll() is not None:
            figures.problems.append(f"{name} exited on its own, with {process.returncode}")
    if len(set(submitter.accepted.values())) != len(submitter.accepted):
        figures.problems.append("two accepted jobs share a tag")
    if figures.jobs < JOBS:
        figures.problems.append(f"only {figures.jobs} jobs accepted")
    done = (chaos.rabbitmq_restarts, chaos.redis_restarts)
    if done != (1, 1) or chaos.worker_kills < WORKER_KILLS:
        figures.problems.append(
            f"faults done: {chaos.worker_kills} kills, {done[0]} RabbitMQ and {done[1]} Redis "
            f"restarts, not at least {WORKER_KILLS}, 1 and 1"
        )
    if chaos.kills_mid_job < MID_JOB_KILLS:
        figures.problems.append(
            f"only {chaos.kills_mid_job} kills landed while the worker ran a job, "
            f"not at least {MID_JOB_KILLS}"
        )


def report(
    figures: Figures, chaos: Chaos, submitter: Submitter, record_property: RecordProperty
) -> None:
    """The figures, the timeline of faults and the API's answers, for the run's summary."""
    answers = ", ".join(f"{key}: {n}" for key, n in sorted(submitter.answers.counts.items()))
    windows = submitter.answers.refusal_windows(since=chaos.started)
    lines = [
        figures.table(),
        "faults:",
        *(f"  {line}" for line in chaos.timeline),
        f"API answers: {answers}",
        f"503s at: {', '.join(windows) or 'none'}",
    ]
    record_property("figures", "\n".join(lines))
    figures.save()
