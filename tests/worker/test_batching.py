"""Dynamic batching and model loading, on the real RabbitMQ and Redis.

`tally` (tests.support.tasks) takes batches of up to 4 items within 100 ms,
with a model loaded once per pool process; each job's summary names the tags
of the batch it ran in, the process that loaded the model, and how many times
that process loaded it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from factq.broker import Broker, JobMessage
from factq.errors import FactqError
from factq.settings import Settings
from factq.state.store import Store
from factq.worker import Worker, runner
from tests.conftest import api_client, running_worker
from tests.support.backends import queue_depth
from tests.support.tasks import executions
from tests.support.waiting import (
    until,
    until_past_deadline,
    wait_for_job,
    wait_for_jobs,
)


async def submit_tally(client: httpx.AsyncClient, tag: str, log: str, **more: Any) -> str:
    body: dict[str, Any] = {"task": "tally", "input": {"tag": tag, "log": log, **more}}
    if "deadline_s" in more:
        body["deadline_s"] = body["input"].pop("deadline_s")
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def pool_of(worker: Worker) -> Any:
    assert worker._jobs is not None
    return worker._jobs._pool


async def events_of(settings: Settings, job_id: str) -> list[str]:
    """The statuses of the job's events, as its event log keeps them."""
    async with Store.open(settings) as store:
        return [str(event.job.status) for event in await store.events.read(job_id)]


async def test_queued_jobs_run_together_each_ending_on_its_own(
    settings_factory, execution_log: str
) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        ids = [await submit_tally(client, f"t{i}", execution_log) for i in range(8)]
        async with running_worker(settings) as worker:
            jobs = await wait_for_jobs(client, ids)
            pids = pool_of(worker).process_ids
        batches = {tuple(job["result"]["batch"]) for job in jobs.values()}
        assert batches == {("t0", "t1", "t2", "t3"), ("t4", "t5", "t6", "t7")}
        for i, job_id in enumerate(ids):
            job = jobs[job_id]
            assert job["status"] == "succeeded"
            assert job["result"]["tag"] == f"t{i}"
            assert job["attempts"] == 1
            # The model was loaded once, in the process that ran every batch.
            assert job["result"]["loads"] == 1
            assert job["result"]["model_pid"] in pids
            text = await client.get(f"/v1/jobs/{job_id}/result")
            assert text.text == f"t{i}"
            assert await events_of(settings, job_id) == ["queued", "running", "succeeded"]
    assert sorted(tag for tag, _ in executions(execution_log)) == [f"t{i}" for i in range(8)]


async def test_a_batch_counts_items_not_jobs(settings_factory, execution_log: str) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        ids = [
            await submit_tally(client, "three", execution_log, items=3),
            await submit_tally(client, "two", execution_log, items=2),
            await submit_tally(client, "one", execution_log, items=1),
        ]
        async with running_worker(settings):
            jobs = await wait_for_jobs(client, ids)
    assert [jobs[job_id]["result"]["batch"] for job_id in ids] == [
        ["three"],
        ["two", "one"],
        ["two", "one"],
    ]


async def test_a_failing_item_fails_only_its_job(settings_factory, execution_log: str) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        good = await submit_tally(client, "good", execution_log)
        bad = await submit_tally(client, "bad", execution_log, fail=True)
        other = await submit_tally(client, "other", execution_log)
        async with running_worker(settings):
            jobs = await wait_for_jobs(client, [good, bad, other])
    assert jobs[bad]["status"] == "failed"
    assert jobs[bad]["error"] == {"type": "task_error", "message": "ValueError: bad failed"}
    for job_id in (good, other):
        assert jobs[job_id]["status"] == "succeeded"
        assert jobs[job_id]["result"]["batch"] == ["good", "bad", "other"]


async def test_a_cancelled_job_leaves_its_batch_and_the_others_finish(
    settings_factory, execution_log: str
) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        ids = [await submit_tally(client, f"c{i}", execution_log, sleep_s=3.0) for i in range(3)]
        async with running_worker(settings):
            await until(lambda: len(executions(execution_log)) == 3)
            cancelled = await client.post(f"/v1/jobs/{ids[1]}/cancel")
            assert cancelled.status_code in (200, 202), cancelled.text
            # It ends at once, while its batch still runs for the others.
            job = await wait_for_job(client, ids[1], timeout_s=2.5)
            assert job["status"] == "cancelled"
            still = (await client.get(f"/v1/jobs/{ids[0]}")).json()
            assert still["status"] == "running"
            jobs = await wait_for_jobs(client, [ids[0], ids[2]])
        assert (await client.get(f"/v1/jobs/{ids[1]}")).json()["status"] == "cancelled"
    assert {job["status"] for job in jobs.values()} == {"succeeded"}


async def test_a_batch_all_cancelled_is_stopped_and_its_process_replaced(
    settings_factory, execution_log: str
) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        ids = [await submit_tally(client, f"s{i}", execution_log, sleep_s=30.0) for i in range(2)]
        async with running_worker(settings) as worker:
            pool = pool_of(worker)
            await until(lambda: len(executions(execution_log)) == 2)
            before = pool.process_ids
            for job_id in ids:
                await client.post(f"/v1/jobs/{job_id}/cancel")
            jobs = await wait_for_jobs(client, ids, timeout_s=5)
            assert {job["status"] for job in jobs.values()} == {"cancelled"}
            await until(lambda: pool.process_ids and not pool.process_ids & before)
            # The process that replaced it loaded the model again, once.
            after = await wait_for_job(client, await submit_tally(client, "after", execution_log))
    assert after["result"]["model_pid"] not in before
    assert after["result"]["loads"] == 1


async def test_a_crash_redelivers_the_whole_batch_and_each_job_ends_once(
    settings_factory, execution_log: str, tmp_path: Path
) -> None:
    settings = settings_factory(concurrency=1)
    marker = str(tmp_path / "crashed")
    async with api_client(settings) as client:
        ids = [await submit_tally(client, "k0", execution_log)]
        ids.append(await submit_tally(client, "k1", execution_log, crash_once=marker))
        ids += [await submit_tally(client, f"k{i}", execution_log) for i in (2, 3)]
        async with running_worker(settings):
            jobs = await wait_for_jobs(client, ids)
    for job_id in ids:
        job = jobs[job_id]
        assert job["status"] == "succeeded"
        assert job["attempts"] == 2
        events = await events_of(settings, job_id)
        assert events[0] == "queued" and events[-1] == "succeeded"
        assert events.count("running") == 2 and events.count("succeeded") == 1
    # The crash came before any item ran: each ran once, after the redelivery.
    assert sorted(tag for tag, _ in executions(execution_log)) == ["k0", "k1", "k2", "k3"]


async def test_an_expired_job_leaves_its_batch(settings_factory, execution_log: str) -> None:
    settings = settings_factory(concurrency=1)
    async with api_client(settings) as client:
        late = await submit_tally(client, "late", execution_log, deadline_s=0.5)
        ok = await submit_tally(client, "ok", execution_log)
        await until_past_deadline(settings, late)
        async with running_worker(settings):
            jobs = await wait_for_jobs(client, [late, ok])
    assert jobs[late]["status"] == "failed"
    assert jobs[late]["error"]["type"] == "expired"
    assert jobs[ok]["status"] == "succeeded"
    assert jobs[ok]["result"]["batch"] == ["ok"]
    assert [tag for tag, _ in executions(execution_log)] == ["ok"]


async def test_a_model_that_cannot_load_is_left_out_in_one_line(
    settings_factory, execution_log: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_factory(worker_tasks="broken_model,tally", concurrency=1)
    async with api_client(settings) as client:
        broken = await client.post("/v1/jobs", json={"task": "broken_model", "input": {}})
        assert broken.status_code == 202
        with caplog.at_level(logging.ERROR, logger="factq"):
            async with running_worker(settings):
                job = await wait_for_job(client, await submit_tally(client, "t", execution_log))
                ready = (await client.get("/readyz")).json()
                tasks = (await client.get("/v1/tasks")).json()["tasks"]
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and "broken_model" in r.getMessage()
        ]
        assert lines == [
            "task broken_model: its model did not load (FileNotFoundError: no weights at "
            "/nowhere/model.bin); taking none of its jobs"
        ]
        assert job["status"] == "succeeded"
        # Its job stays queued for a worker that can serve it.
        assert (await client.get(f"/v1/jobs/{broken.json()['id']}")).json()["status"] == "queued"
        assert await queue_depth(settings, "broken_model") == 1
        assert ready["tasks"]["broken_model"] == {"queue_depth": 1, "consumers": 0}
        assert ready["tasks"]["tally"]["consumers"] == 1
        consumers = {task["name"]: task["consumers"] for task in tasks}
        assert consumers["broken_model"] == 0 and consumers["tally"] == 1


async def test_a_worker_takes_only_the_tasks_it_serves(
    settings_factory, execution_log: str
) -> None:
    settings = settings_factory(concurrency=1)
    tally_only = settings.model_copy(update={"worker_tasks": "tally"})
    record_only = settings.model_copy(update={"worker_tasks": "record"})
    async with api_client(settings) as client:
        record = await client.post(
            "/v1/jobs", json={"task": "record", "input": {"tag": "r", "log": execution_log}}
        )
        record_id = record.json()["id"]
        tally_id = await submit_tally(client, "t", execution_log)
        async with running_worker(tally_only):
            assert (await wait_for_job(client, tally_id))["status"] == "succeeded"
            assert (await client.get(f"/v1/jobs/{record_id}")).json()["status"] == "queued"
            assert await queue_depth(settings, "record") == 1
        second = await submit_tally(client, "t2", execution_log)
        async with running_worker(record_only):
            assert (await wait_for_job(client, record_id))["status"] == "succeeded"
            assert (await client.get(f"/v1/jobs/{second}")).json()["status"] == "queued"
            assert await queue_depth(settings, "tally") == 1
    assert [tag for tag, _ in executions(execution_log)] == ["t", "r"]


async def test_returns_of_a_never_started_job_do_not_fail_it(
    settings_factory, execution_log: str
) -> None:
    # max_attempts 2: RabbitMQ dead-letters a message on its second return,
    # started or not. These returns never started the job (a worker killed
    # while it held it, or one that stopped): it goes back to its queue.
    settings = settings_factory(max_attempts=2, concurrency=1)
    async with api_client(settings) as client:
        job_id = await submit_tally(client, "held", execution_log)
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel()
            queue_name = f"{settings.namespace}.jobs.tally"
            queue = await channel.declare_queue(queue_name, passive=True)
            for _ in range(2):
                message = await queue.get(timeout=5)
                assert message is not None
                await message.reject(requeue=True)
        async with running_worker(settings):
            job = await wait_for_job(client, job_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert [tag for tag, _ in executions(execution_log)] == ["held"]


async def test_a_job_message_of_a_served_task_is_published_to_its_queue(
    settings: Settings, broker: Broker
) -> None:
    await broker.publish_jobs([JobMessage(job_id="d" * 32, task="tally", input={})])
    assert await queue_depth(settings, "tally") == 1
    assert await queue_depth(settings, "record") == 0


async def test_a_worker_left_with_no_task_to_serve_does_not_start(settings_factory) -> None:
    settings = settings_factory(worker_tasks="broken_model", concurrency=1)
    with pytest.raises(FactqError, match="no task to serve"):
        async with Worker(settings):
            pass


async def test_a_task_whose_model_does_not_fit_in_memory_is_left_out(
    settings_factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # embed needs 512 MiB in each of 2 processes; say 600 MiB are available.
    monkeypatch.setattr(runner, "available_memory_mib", lambda: 600)
    settings = settings_factory(worker_tasks="embed,record", concurrency=2)
    with caplog.at_level(logging.ERROR, logger="factq"):
        async with Worker(settings) as worker:
            assert worker._jobs is not None
            assert [task.name for task in worker._jobs._tasks] == ["record"]
            # Its model was never loaded: the pool loads none.
            assert pool_of(worker).loaded == set()
    [line] = [r.getMessage() for r in caplog.records if "embed" in r.getMessage()]
    assert line == (
        "task embed: needs 512 MiB in each of 2 pool processes, 600 MiB available "
        "(fewer processes, or fewer tasks per worker with --tasks); taking none of its jobs"
    )
