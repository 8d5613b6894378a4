"""Cancelling queued and running jobs: a queued job never runs, a running one is stopped."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from factq.settings import Settings
from factq.state.store import Store
from factq.worker import cancels
from tests.conftest import running_worker
from tests.support.tasks import executions
from tests.support.waiting import until, wait_for_job


async def submit(client: httpx.AsyncClient, task: str, **inputs: Any) -> str:
    response = await client.post("/v1/jobs", json={"task": task, "input": inputs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_a_cancelled_queued_job_never_runs(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    job_id = await submit(client, "record", tag="never", log=execution_log)
    response = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None and job["started_at"] is None
    async with running_worker(settings):
        after = await wait_for_job(
            client, await submit(client, "record", tag="after", log=execution_log)
        )
    assert after["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["after"]
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"
    result = await client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409
    assert result.json()["error"]["type"] == "job_cancelled"


async def test_a_running_job_is_stopped_through_the_control_channel(
    client: httpx.AsyncClient,
    settings: Settings,
    execution_log: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No flag checks: only the control-channel message can stop the job in time.
    monkeypatch.setattr(cancels, "CANCEL_CHECK_INTERVAL_S", 3600)
    async with running_worker(settings):
        job_id = await submit(client, "record", tag="long", log=execution_log, sleep_s=30)
        await until(lambda: executions(execution_log))
        response = await client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "running"
        assert response.json()["cancel_requested"] is True
        job = await wait_for_job(client, job_id, timeout_s=10)
        # Its pool process was ended and replaced: the pool keeps serving.
        next_job = await wait_for_job(client, await submit(client, "factorial", n=20))
    assert job["status"] == "cancelled"
    assert job["result"] is None
    assert next_job["status"] == "succeeded"


async def test_a_cancel_whose_message_was_lost_is_found_by_the_flag_check(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    assert cancels.CANCEL_CHECK_INTERVAL_S <= 1
    async with running_worker(settings):
        job_id = await submit(client, "record", tag="long", log=execution_log, sleep_s=30)
        await until(lambda: executions(execution_log))
        # Set the flag without the control-channel message, as if pub/sub dropped it.
        raw = redis.Redis.from_url(settings.redis_url.get_secret_value())
        await raw.hset(store.keys.job(job_id), "cancel_requested", "1")
        await raw.aclose()
        job = await wait_for_job(client, job_id, timeout_s=5)
    assert job["status"] == "cancelled"


async def test_cancelling_a_finished_or_unknown_job(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async with running_worker(settings):
        job = await wait_for_job(client, await submit(client, "factorial", n=5))
    again = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "already_finished"
    unknown = await client.post(f"/v1/jobs/{'b' * 32}/cancel")
    assert unknown.status_code == 404


async def test_a_second_cancel_of_a_running_job_changes_nothing(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    async with running_worker(settings):
        job_id = await submit(client, "record", tag="long", log=execution_log, sleep_s=2)
        await until(lambda: executions(execution_log))
        first = (await client.post(f"/v1/jobs/{job_id}/cancel")).json()
        second = await client.post(f"/v1/jobs/{job_id}/cancel")
        assert second.status_code in (200, 409)
        if second.status_code == 200:
            assert second.json()["cancel_requested"] is True
        final = await wait_for_job(client, job_id, timeout_s=5)
    events = await store.events.read(job_id)
    assert first["cancel_requested"] is True
    assert final["status"] == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e.job.cancel_requested and e.job.status == "running") == 1
