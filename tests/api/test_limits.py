"""Submission rate and jobs in flight, per key: 429 with Retry-After."""

from __future__ import annotations

import httpx

from factq.state.store import Store
from tests.conftest import api_client
from tests.support.backends import queue_depth

JOB = {"task": "factorial", "input": {"n": 5}}


async def test_over_the_rate_is_a_429_with_retry_after(settings_factory) -> None:
    settings = settings_factory(rate_limit="5/minute")
    async with api_client(settings) as client:
        codes = [(await client.post("/v1/jobs", json=JOB)).status_code for _ in range(5)]
        refused = await client.post("/v1/jobs", json=JOB)
        batch = await client.post("/v1/jobs/batch", json={"jobs": [JOB, JOB]})
        compat = await client.get("/factorial", params={"no": "5"})
    assert codes == [202] * 5
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert batch.status_code == compat.status_code == 429
    assert await queue_depth(settings) == 5


async def test_a_batch_counts_each_job(settings_factory) -> None:
    settings = settings_factory(rate_limit="10/minute")
    async with api_client(settings) as client:
        first = await client.post("/v1/jobs/batch", json={"jobs": [JOB] * 8})
        second = await client.post("/v1/jobs/batch", json={"jobs": [JOB] * 3})
        third = await client.post("/v1/jobs/batch", json={"jobs": [JOB] * 2})
    assert (first.status_code, second.status_code, third.status_code) == (202, 429, 202)


async def test_each_key_has_its_own_rate(settings_factory) -> None:
    settings = settings_factory(rate_limit="2/minute", api_keys="k1,k2")
    async with api_client(settings) as client:
        k1 = {"Authorization": "Bearer k1"}
        k2 = {"Authorization": "Bearer k2"}
        first = [
            (await client.post("/v1/jobs", json=JOB, headers=k1)).status_code for _ in range(3)
        ]
        other = (await client.post("/v1/jobs", json=JOB, headers=k2)).status_code
    assert first == [202, 202, 429]
    assert other == 202


async def test_jobs_in_flight_are_capped_per_key(settings_factory) -> None:
    settings = settings_factory(max_in_flight_per_key=3)
    async with api_client(settings) as client:
        ids = [(await client.post("/v1/jobs", json=JOB)).json()["id"] for _ in range(3)]
        refused = await client.post("/v1/jobs", json=JOB)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limited"
        assert "in flight" in refused.json()["error"]["message"]
        # A finished job frees its place.
        assert (await client.post(f"/v1/jobs/{ids[0]}/cancel")).json()["status"] == "cancelled"
        again = await client.post("/v1/jobs", json=JOB)
    assert again.status_code == 202


async def test_no_limits_by_default(client: httpx.AsyncClient, store: Store) -> None:
    response = await client.post("/v1/jobs/batch", json={"jobs": [JOB] * 200})
    assert response.status_code == 202
