"""What must hold after the faults: the service recovered on its own, and each
accepted job ended once, succeeded, with its own result, run only as often as the
faults explain."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter, defaultdict
from typing import Any, NamedTuple

import httpx
import redis.asyncio as redis

from factq.api.auth import ANONYMOUS
from factq.broker import QueueNames
from factq.settings import Settings
from factq.state.connection import text
from factq.state.keys import Keys
from tests.faults.chaos import Chaos
from tests.faults.figures import Figures
from tests.faults.load import Submitter
from tests.support.backends import queue_consumers
from tests.support.service import Service

TERMINAL = {"succeeded", "failed", "cancelled"}
RECOVERY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
# A run this long may still go on when the workers reconnect after RabbitMQ
# restarted (down for seconds; aio-pika reconnects 5 s later), and the broker
# gives its message back meanwhile. A shorter run has long stored its outcome.
OUTLIVES_RESTART_S = 1.0


async def wait_for_recovery(
    http: httpx.AsyncClient, settings: Settings, redis_url: str, service: Service, chaos: Chaos
) -> None:
    """Every live worker consumes its tasks' queues and the dead letters and listens
    for cancels again, and the API's event hub listens again: nothing stayed
    wedged after a reconnect."""
    names = Keys(settings.namespace)
    workers = sum(
        1
        for name, p in service.processes.items()
        if name.startswith("worker-") and p.poll() is None
    )
    expected = {
        "redis": "ok",
        "rabbitmq": "ok",
        "job consumers": workers,
        "dead-letter consumers": workers,
        "cancel listeners": workers,
        "event hubs": 1,
    }
    state: dict[str, Any] = {}
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    async with redis.Redis.from_url(redis_url) as client:
        while time.monotonic() < deadline:
            ready = (await http.get("/readyz")).json()
            subscribers = dict(
                await client.pubsub_numsub(names.control_channel, *names.events_channels)
            )
            state = {
                "redis": ready["redis"],
                "rabbitmq": ready["rabbitmq"],
                # Each served task's queue, the fewest: a worker consumes each.
                "job consumers": min(
                    ready["tasks"][task]["consumers"]
                    for task in settings.worker_task_names or ready["tasks"]
                ),
                "dead-letter consumers": await queue_consumers(
                    settings, QueueNames(settings.namespace).dead_letter_queue
                ),
                "cancel listeners": subscribers[names.control_channel.encode()],
                "event hubs": subscribers[names.events_channels[0].encode()],
            }
            if state == expected:
                return
            await asyncio.sleep(0.5)
    raise AssertionError(
        f"not recovered {RECOVERY_TIMEOUT_S:g} s after the last fault: {state}, "
        f"expected {expected}\n" + "\n".join(chaos.timeline) + "\n" + service.log_text()
    )


async def wait_until_final(
    client: redis.Redis, names: Keys, job_ids: list[str]
) -> dict[str, str | None]:
    """Each job's status once all are final, or at the deadline (None: the job is gone)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(names.job(job_id), "status")
            replies = await pipe.execute()
        statuses = {
            job_id: reply.decode() if reply else None
            for job_id, reply in zip(job_ids, replies, strict=True)
        }
        if all(status in TERMINAL for status in statuses.values()):
            return statuses
        if time.monotonic() > deadline or None in statuses.values():
            return statuses
        await asyncio.sleep(0.5)


async def check_live_events(http: httpx.AsyncClient, log: str) -> None:
    """A job followed with `Prefer: wait` on an idle service answers in about its run
    time: the API's event hub delivers live events again (a wedged hub would only
    catch up every 5 s, when its followers read the job's stream)."""
    body = {"task": "record", "input": {"tag": "after-faults", "log": log, "sleep_s": 0.5}}
    started = time.monotonic()
    response = await http.post("/v1/jobs", json=body, headers={"Prefer": "wait=10"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert elapsed < 3.0, f"the finished job's event took {elapsed:.1f} s to arrive"


async def count_completed_twice(
    client: redis.Redis, names: Keys, job_ids: list[str], problems: list[str]
) -> int:
    """Jobs with more than one terminal event in their stream; a gap in `seq` is a problem."""
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.xrange(names.events(job_id))
        streams = await pipe.execute()
    twice = 0
    for job_id, entries in zip(job_ids, streams, strict=True):
        seqs = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
        statuses = [json.loads(fields[b"job"])["status"] for _, fields in entries]
        finals = sum(status in TERMINAL for status in statuses)
        if finals > 1:
            twice += 1
            problems.append(f"job {job_id} completed {finals} times: {statuses}")
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"job {job_id}: events {seqs} are not 1, 2, 3, ...")
    return twice


async def count_jobs_made(
    client: redis.Redis, names: Keys, accepted: dict[str, str]
) -> dict[str, int]:
    """The accepted submissions that made more than one job, and how many each:
    a retry with the same Idempotency-Key after a 503 should get the job the first
    try made, if it made one, never a second."""
    # Every job is indexed as it is stored, before its message is published, so
    # the index holds any job a submission made: found from it, not from a walk
    # of the keyspace. (One whose indexing failed was never published; should
    # it run all the same, its run shows as an unexplained re-execution.)
    job_ids: list[bytes] = await client.zrange(names.owner_jobs(ANONYMOUS), 0, -1)  # type: ignore[assignment]
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(names.job(text(job_id)), "input")
        inputs = await pipe.execute()
    made: Counter[str] = Counter(
        json.loads(job_input)["tag"] for job_input in inputs if job_input is not None
    )
    return {tag: made[tag] for tag in accepted.values() if made[tag] > 1}


async def check_jobs(
    http: httpx.AsyncClient,
    accepted: dict[str, str],
    statuses: dict[str, str | None],
    figures: Figures,
) -> dict[str, int]:
    """Through the API: each job succeeded, with its own tag as its result; the
    attempts of each, by tag."""
    figures.lost = sum(status is None for status in statuses.values())
    figures.stuck = sum(
        status is not None and status not in TERMINAL for status in statuses.values()
    )
    for job_id, status in statuses.items():
        if status not in TERMINAL:
            figures.problems.append(f"job {job_id} ({accepted[job_id]}) is {status or 'gone'}")
    slots = asyncio.Semaphore(10)
    attempts: dict[str, int] = {}

    async def check(job_id: str, tag: str) -> None:
        async with slots:
            job = await _get(http, f"/v1/jobs/{job_id}")
            result = await _get(http, f"/v1/jobs/{job_id}/result")
        body = job.json() if job.status_code == 200 else {}
        attempts[tag] = body.get("attempts", 0)
        if (
            body.get("status") != "succeeded"
            or body.get("result", {}).get("tag") != tag
            or result.status_code != 200
            or result.text != tag
        ):
            figures.not_succeeded += 1
            figures.problems.append(
                f"job {job_id} ({tag}): {job.status_code} {job.text[:300]}; "
                f"result {result.status_code} {result.text[:100]!r}"
            )

    done = [job_id for job_id, status in statuses.items() if status in TERMINAL]
    await asyncio.gather(*(check(job_id, accepted[job_id]) for job_id in done))
    return attempts


async def _get(http: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET, retrying a 503 a few times, as a client that honours Retry-After would."""
    for _ in range(20):
        response = await http.get(path)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.2)
    return response


class Run(NamedTuple):
    """One execution, from the `record` task's log."""

    pid: int  # the pool process
    worker: int  # its parent: the worker's forkserver
    offset: int  # where its line starts in the log


def read_runs(log: str) -> defaultdict[str, list[Run]]:
    """Each tag's executions, in the order they began."""
    runs: defaultdict[str, list[Run]] = defaultdict(list)
    if os.path.exists(log):
        offset = 0
        with open(log, "rb") as file:
            for line in file:
                tag, pid, parent = line.split()
                runs[tag.decode()].append(Run(int(pid), int(parent), offset))
                offset += len(line)
    return runs


def count_executions(
    log: str,
    submitter: Submitter,
    chaos: Chaos,
    attempts: dict[str, int],
    made_twice: dict[str, int],
    figures: Figures,
) -> None:
    """Executions from the task's own log: each accepted job ran at least once, never
    more often than it was started, never twice in one worker, and each run beyond
    the first is explained: the worker of an earlier run was killed, or RabbitMQ
    gave the message back while a long earlier run was still going."""
    runs = read_runs(log)
    tags = set(submitter.accepted.values())
    figures.executions = sum(len(runs[tag]) for tag in tags)
    for tag in sorted(tags):
        if not runs[tag]:
            figures.problems.append(f"{tag} was accepted but never ran")
            continue
        # A submission that made two jobs (see count_jobs_made) ran twice, once per job.
        jobs_made = made_twice.get(tag, 1)
        extra = max(0, len(runs[tag]) - jobs_made)
        killed = [run for run in runs[tag] if {run.pid, run.worker} & chaos.killed_pids]
        cut = [
            run
            for run in runs[tag]
            if run not in killed
            and submitter.sleep_by_tag[tag] >= OUTLIVES_RESTART_S
            and any(
                run.offset < stop <= later.offset
                for stop in chaos.rabbitmq_stop_offsets
                for later in runs[tag]
            )
        ]
        figures.re_executions += extra
        figures.re_executions_after_kill += min(extra, len(killed))
        figures.re_executions_after_restart += min(extra - min(extra, len(killed)), len(cut))
        if extra > len(killed) + len(cut):
            figures.problems.append(
                f"{tag} ({submitter.sleep_by_tag[tag]} s) ran {len(runs[tag])} times, "
                f"{len(killed)} of them on a killed worker: {runs[tag]}"
            )
        workers = [run.worker for run in runs[tag] if run not in killed]
        if len(set(workers)) < len(workers):
            figures.problems.append(f"{tag} ran twice in one worker: {runs[tag]}")
        if jobs_made == 1 and len(runs[tag]) > attempts.get(tag, 0):
            figures.problems.append(
                f"{tag} ran {len(runs[tag])} times but was started {attempts.get(tag)} times"
            )
    others = set(runs) - tags - {"after-faults"}
    figures.refused_but_ran = len(others & submitter.refused_tags)
    for tag in others - submitter.refused_tags:
        figures.problems.append(f"{tag} ran, but no one submitted it")
