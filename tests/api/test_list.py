"""GET /v1/jobs: the caller's jobs, newest first, paged with a cursor."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from factq.schema import JobError
from factq.state.store import Store
from tests.conftest import api_client


async def submit_many(client: httpx.AsyncClient, count: int) -> list[str]:
    body = {"jobs": [{"task": "factorial", "input": {"n": n}} for n in range(count)]}
    response = await client.post("/v1/jobs/batch", json=body)
    return [job["id"] for job in response.json()["jobs"]]


async def pages(client: httpx.AsyncClient, **params: str | int) -> list[list[dict[str, Any]]]:
    result = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        result.append(page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return result


async def test_paging_returns_every_job_once_newest_first(client: httpx.AsyncClient) -> None:
    first = await submit_many(client, 7)
    single = (await client.post("/v1/jobs", json={"task": "factorial", "input": {"n": 1}})).json()
    second = await submit_many(client, 5)
    listed = await pages(client, limit=3)
    ids = [job["id"] for page in listed for job in page]
    assert ids == list(reversed([*first, single["id"], *second]))
    assert all(len(page) <= 3 for page in listed)


async def test_status_filter(client: httpx.AsyncClient, store: Store) -> None:
    ids = await submit_many(client, 6)
    for job_id in ids[:2]:
        await store.runs.mark_failed(job_id, JobError(type="task_error", message="x"))
    failed = [job for page in await pages(client, status="failed", limit=1) for job in page]
    assert [job["id"] for job in failed] == list(reversed(ids[:2]))
    queued = [job for page in await pages(client, status="queued") for job in page]
    assert {job["id"] for job in queued} == set(ids[2:])


async def test_deleted_and_expired_jobs_drop_out_of_the_list(
    client: httpx.AsyncClient, store: Store
) -> None:
    ids = await submit_many(client, 3)
    await store._redis.delete(store.keys.job(ids[1]))
    listed = [job["id"] for page in await pages(client) for job in page]
    assert listed == [ids[2], ids[0]]
    assert await store._redis.zcard(store.keys.owner_jobs("")) == 2


async def test_another_owners_jobs_are_not_listed(client: httpx.AsyncClient, store: Store) -> None:
    from factq.state.records import NewJob
    from factq.submit import new_job_id

    mine = await submit_many(client, 2)
    await store.jobs.create([NewJob(new_job_id(), "factorial", {"n": 1}, "someone-else")])
    listed = [job["id"] for page in await pages(client) for job in page]
    assert listed == list(reversed(mine))


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"status": "done"}, {"cursor": "abc"}, {"cursor": "²"}],
)
async def test_bad_parameters_are_a_400(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get("/v1/jobs", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


async def test_an_empty_list(settings_factory) -> None:
    async with api_client(settings_factory()) as client:
        response = await client.get("/v1/jobs")
    assert response.json() == {"jobs": [], "next_cursor": None}


async def test_jobs_created_while_others_list_are_never_dropped(
    client: httpx.AsyncClient, store: Store
) -> None:
    from factq.state.records import NewJob
    from factq.submit import new_job_id

    created: list[str] = []

    async def create() -> None:
        for _ in range(40):
            job = NewJob(new_job_id(), "factorial", {"n": 1}, "")
            await store.jobs.create([job])
            created.append(job.job_id)

    async def list_often() -> None:
        while len(created) < 40 * 3:
            await client.get("/v1/jobs", params={"limit": 5})

    await asyncio.gather(create(), create(), create(), list_often(), list_often())
    listed = {job["id"] for page in await pages(client, limit=100) for job in page}
    assert listed == set(created)
