"""The worker on the real RabbitMQ and Redis: consume, run in the pool, store, then ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import httpx
import pytest

from factq.broker import Broker, JobMessage
from factq.settings import Settings
from factq.worker import Worker
from tests.conftest import api_client, running_worker, served
from tests.support.backends import queue_depth
from tests.support.tasks import executions
from tests.support.waiting import until, wait_for_job, wait_for_jobs


async def submit(client: httpx.AsyncClient, task: str, **inputs: Any) -> str:
    response = await client.post("/v1/jobs", json={"task": task, "input": inputs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.usefixtures("worker")
async def test_a_factorial_job_succeeds_with_the_exact_value(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, "factorial", n=150_000)
    job = await wait_for_job(client, job_id)
    assert job["status"] == "succeeded"
    expected = gmpy2.fac(150_000)
    digits = expected.digits()
    assert job["result"] == {
        "digits": 711_273,
        "head": digits[:32],
        "tail": digits[-32:],
        "url": f"/v1/jobs/{job_id}/result",
    }
    assert job["attempts"] == 1
    assert job["metrics"]["queue_s"] >= 0 and job["metrics"]["run_s"] > 0
    decimal = await client.get(job["result"]["url"])
    assert decimal.status_code == 200
    assert decimal.headers["content-type"].startswith("text/plain")
    assert decimal.headers["content-length"] == "711273"
    assert decimal.content == digits.encode()
    hexadecimal = await client.get(job["result"]["url"], params={"format": "hex"})
    assert gmpy2.mpz(hexadecimal.text, 16) == expected


@pytest.mark.usefixtures("worker")
async def test_a_task_error_fails_the_job(client: httpx.AsyncClient) -> None:
    job = await wait_for_job(client, await submit(client, "fail", message="bad weights"))
    assert job["status"] == "failed"
    assert job["error"] == {"type": "task_error", "message": "ValueError: bad weights"}
    result = await client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 409
    assert result.json()["error"]["type"] == "job_failed"


@pytest.mark.usefixtures("worker")
async def test_a_finished_job_can_be_deleted(client: httpx.AsyncClient) -> None:
    job = await wait_for_job(client, await submit(client, "factorial", n=10))
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 204
    assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 404
    assert (await client.get(f"/v1/jobs/{job['id']}/result")).status_code == 404


async def test_a_job_past_its_time_limit_fails_with_timeout(
    settings_factory, execution_log: str
) -> None:
    async with served(settings_factory(job_timeout_s=0.5)) as client:
        started = time.monotonic()
        job_id = await submit(client, "record", tag="slow", log=execution_log, sleep_s=30)
        job = await wait_for_job(client, job_id, timeout_s=10)
        elapsed = time.monotonic() - started
        # The pool keeps serving after the process was ended and replaced.
        after = await wait_for_job(client, await submit(client, "factorial", n=100))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "timeout"
    assert elapsed < 0.5 + 2
    assert after["status"] == "succeeded"


async def test_a_message_without_a_job_is_dropped(settings_factory, execution_log: str) -> None:
    # One pool process, so prefetch 1: RabbitMQ hands the worker the marker job
    # only once the message before it is settled.
    settings = settings_factory(concurrency=1)
    async with (
        api_client(settings) as client,
        Broker.open(settings, tasks=["record"], name="factq-test") as broker,
    ):
        async with running_worker(settings):
            orphan = JobMessage(
                job_id="e" * 32, task="record", input={"tag": "orphan", "log": execution_log}
            )
            await broker.publish_jobs([orphan])
            marker = await wait_for_job(
                client, await submit(client, "record", tag="marker", log=execution_log)
            )
            assert (await broker.queue_stats("record")).consumers == 1
        # Taken, found without a job, and acknowledged: the worker's connection
        # is closed, and a message it still held would be back in the queue.
        assert await queue_depth(settings) == 0
    assert marker["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["marker"]


async def test_a_redelivered_finished_job_is_not_run_again(
    settings_factory, execution_log: str
) -> None:
    # One pool process, so prefetch 1: RabbitMQ hands the worker the marker job
    # only once the redelivered copy before it is settled.
    settings = settings_factory(concurrency=1)
    async with (
        api_client(settings) as client,
        Broker.open(settings, tasks=["record"], name="factq-test") as broker,
    ):
        async with running_worker(settings):
            job_id = await submit(client, "record", tag="once", log=execution_log)
            job = await wait_for_job(client, job_id)
            # The same message again, as after a worker died between store and ack.
            message = JobMessage(job_id=job_id, task="record", input=job["input"])
            await broker.publish_jobs([message])
            marker = await wait_for_job(
                client, await submit(client, "record", tag="marker", log=execution_log)
            )
        assert await queue_depth(settings) == 0
        assert (await client.get(f"/v1/jobs/{job_id}")).json() == job
    assert marker["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["once", "marker"]


@pytest.mark.parametrize("max_attempts", [2, 3])
async def test_a_pool_process_that_dies_every_time_ends_as_worker_lost(
    settings_factory, execution_log: str, max_attempts: int
) -> None:
    async with served(settings_factory(max_attempts=max_attempts)) as client:
        crash_id = await submit(client, "crash", log=execution_log)
        fine_id = await submit(client, "factorial", n=1000)
        jobs = await wait_for_jobs(client, [crash_id, fine_id], timeout_s=30)
    assert jobs[crash_id]["status"] == "failed"
    assert jobs[crash_id]["error"]["type"] == "worker_lost"
    assert jobs[crash_id]["attempts"] == max_attempts
    assert len(executions(execution_log)) == max_attempts
    assert jobs[fine_id]["status"] == "succeeded"


async def test_stop_finishes_the_jobs_in_hand(settings: Settings, execution_log: str) -> None:
    async with api_client(settings) as client, Worker(settings) as worker:
        running = asyncio.create_task(worker.run())
        job_id = await submit(client, "record", tag="drain", log=execution_log, sleep_s=1)
        await until(lambda: executions(execution_log))
        worker.stop()
        await asyncio.wait_for(running, 10)
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "succeeded"
    assert await queue_depth(settings) == 0


async def test_jobs_a_worker_holds_beyond_its_processes_stay_queued_until_one_is_free(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """One pool process, four messages prefetched: one job runs, the others the
    worker holds are still queued (not started, no attempt), and then run in turn."""
    settings = settings_factory(concurrency=1, prefetch_per_process=4)
    log = str(tmp_path / "executions.log")
    async with served(settings) as client:
        ids = [await submit(client, "record", tag=f"t{i}", log=log, sleep_s=1.0) for i in range(3)]
        await until(lambda: len(executions(log)) == 1)
        jobs = [(await client.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
        assert [job["status"] for job in jobs].count("running") == 1
        assert sorted(job["attempts"] for job in jobs) == [0, 0, 1]
        assert await queue_depth(settings) == 0  # all three are in the worker's hands
        done = await wait_for_jobs(client, ids)
    assert [done[job_id]["status"] for job_id in ids] == ["succeeded"] * 3
    assert [tag for tag, _ in executions(log)] == ["t0", "t1", "t2"]
