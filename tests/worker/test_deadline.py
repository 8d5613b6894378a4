"""Deadlines: a job not started within deadline_s is never run and fails as expired."""

from __future__ import annotations

import httpx

from factq.settings import Settings
from tests.conftest import api_client, running_worker
from tests.support.tasks import executions
from tests.support.waiting import until_past_deadline, wait_for_job


async def test_a_job_queued_past_its_deadline_expires_unrun(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    late = {"task": "record", "input": {"tag": "late", "log": execution_log}, "deadline_s": 0.2}
    on_time = {
        "task": "record",
        "input": {"tag": "on-time", "log": execution_log},
        "deadline_s": 60,
    }
    late_id = (await client.post("/v1/jobs", json=late)).json()["id"]
    on_time_id = (await client.post("/v1/jobs", json=on_time)).json()["id"]
    # No worker yet: both wait in the queue until the first one's deadline has passed.
    await until_past_deadline(settings, late_id)
    async with running_worker(settings):
        expired = await wait_for_job(client, late_id)
        ran = await wait_for_job(client, on_time_id)
    assert expired["status"] == "failed"
    assert expired["error"]["type"] == "expired"
    assert expired["started_at"] is None and expired["attempts"] == 0
    assert ran["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["on-time"]


async def test_the_default_deadline_is_a_setting(settings_factory, execution_log: str) -> None:
    settings = settings_factory(job_deadline_s=0.2)
    async with api_client(settings) as client:
        body = {"task": "record", "input": {"tag": "x", "log": execution_log}}
        job_id = (await client.post("/v1/jobs", json=body)).json()["id"]
        await until_past_deadline(settings, job_id)
        async with running_worker(settings):
            job = await wait_for_job(client, job_id)
    assert job["error"]["type"] == "expired"
    assert executions(execution_log) == []


async def test_a_bad_deadline_is_a_422(client: httpx.AsyncClient) -> None:
    for deadline in (0, -1, "soon", 10**9):
        body = {"task": "factorial", "input": {"n": 1}, "deadline_s": deadline}
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == 422, deadline
