"""Idempotency-Key: the same request again is the same job; another is a 409."""

from __future__ import annotations

import asyncio

import httpx

from factq.settings import Settings
from tests.support.backends import queue_depth

JOB = {"task": "factorial", "input": {"n": 7}}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_the_same_key_and_body_return_the_same_job(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    first = await client.post("/v1/jobs", json=JOB, headers=keyed("order-1"))
    again = await client.post("/v1/jobs", json=JOB, headers=keyed("order-1"))
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await queue_depth(settings) == 1


async def test_the_same_key_with_another_body_is_a_409(client: httpx.AsyncClient) -> None:
    await client.post("/v1/jobs", json=JOB, headers=keyed("order-2"))
    other = {"task": "factorial", "input": {"n": 8}}
    response = await client.post("/v1/jobs", json=other, headers=keyed("order-2"))
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "idempotency_conflict"


async def test_concurrent_requests_with_one_key_make_one_job(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/jobs", json=JOB, headers=keyed("order-3")) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await queue_depth(settings) == 1


async def test_keys_belong_to_their_api_key(settings_factory) -> None:
    from tests.conftest import api_client

    settings = settings_factory(api_keys="k1,k2")
    async with api_client(settings) as client:
        one = await client.post(
            "/v1/jobs", json=JOB, headers={**keyed("same"), "Authorization": "Bearer k1"}
        )
        two = await client.post(
            "/v1/jobs", json=JOB, headers={**keyed("same"), "Authorization": "Bearer k2"}
        )
    assert one.json()["id"] != two.json()["id"]


async def test_without_a_key_each_request_is_a_new_job(client: httpx.AsyncClient) -> None:
    ids = {(await client.post("/v1/jobs", json=JOB)).json()["id"] for _ in range(3)}
    assert len(ids) == 3
