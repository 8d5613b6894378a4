"""Idempotency-Key: the same request again is the same job; another is a 409."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import httpx
import pytest
import redis.asyncio as redis

from factq.errors import BackendUnavailable, IdempotencyConflict, JobNotFound
from factq.schema import JobRequest
from factq.settings import Settings
from factq.state.connection import text
from factq.state.jobs import JobRecords
from factq.state.records import NewJob
from factq.state.store import Store
from factq.submit import CLAIM_STALE_S, fingerprint
from tests.conftest import api_client
from tests.support.backends import queue_depth
from tests.support.waiting import until_true

JOB = {"task": "factorial", "input": {"n": 7}}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


class RefusedConfirms:
    """Redis refuses the first `refusals` confirmations of published jobs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refusals: int) -> None:
        self.refusals = refusals
        self.confirmed = False
        confirm = JobRecords.confirm

        async def flaky_confirm(jobs: JobRecords, job_ids: Sequence[str]) -> None:
            if self.refusals:
                self.refusals -= 1
                raise BackendUnavailable("Redis is unavailable")
            await confirm(jobs, job_ids)
            self.confirmed = True

        monkeypatch.setattr(JobRecords, "confirm", flaky_confirm)


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


async def test_a_job_published_while_redis_refuses_its_confirmation_is_accepted(
    client: httpx.AsyncClient,
    settings: Settings,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its message is in the queue, so a 503 would only make the client submit it
    again: it is a 202, and the confirmation goes on until Redis takes it."""
    confirms = RefusedConfirms(monkeypatch, refusals=3)
    first = await client.post("/v1/jobs", json=JOB, headers=keyed("order-4"))
    assert first.status_code == 202
    job_id = first.json()["id"]
    again = await client.post("/v1/jobs", json=JOB, headers=keyed("order-4"))
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert await queue_depth(settings) == 1
    job_key = store.keys.job(job_id)
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await until_true(lambda: _persisted(raw, job_key), timeout_s=10)
    assert confirms.confirmed


async def _persisted(raw: redis.Redis, key: str) -> bool:
    return await raw.ttl(key) == -1


async def test_a_key_whose_request_never_made_its_job_makes_it_now(
    client: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    """A request that claimed the key and then failed with Redis down could not
    release it; once that claim is stale, the key makes its job after all."""
    owner_key = store.idempotency.record("", "order-5")
    body = JobRequest.model_validate(JOB)
    stale = f"{fingerprint(body)}:{'0' * 32}:{time.time() - CLAIM_STALE_S - 1:.3f}"
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await raw.set(owner_key, stale)
    first = await client.post("/v1/jobs", json=JOB, headers=keyed("order-5"))
    again = await client.post("/v1/jobs", json=JOB, headers=keyed("order-5"))
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] != "0" * 32
    assert await queue_depth(settings) == 1


async def test_a_fresh_claim_whose_job_is_missing_asks_for_a_retry(
    client: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    """The request holding the key may still be storing its job: a 409 to retry,
    not a second job."""
    owner_key = store.idempotency.record("", "order-6")
    body = JobRequest.model_validate(JOB)
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await raw.set(owner_key, f"{fingerprint(body)}:{'1' * 32}:{time.time():.3f}")
    response = await client.post("/v1/jobs", json=JOB, headers=keyed("order-6"))
    assert response.status_code == 409
    assert "retry" in response.json()["error"]["message"]
    assert await queue_depth(settings) == 0


async def test_a_stale_claim_whose_job_was_never_confirmed_queues_that_job(
    client: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    """Its request failed not knowing whether the message got out (Redis down for
    the discard too), and may have answered with that job: the retry queues the
    job again and keeps it, rather than let it vanish with its provisional TTL."""
    body = JobRequest.model_validate(JOB)
    [orphan] = await store.jobs.create([NewJob("2" * 32, "factorial", {"n": 7}, "")])
    record = store.idempotency.record("", "order-7")
    claimed = time.time() - CLAIM_STALE_S - 1
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await raw.set(record, f"{fingerprint(body)}:{orphan.id}:{claimed:.6f}")
        response = await client.post("/v1/jobs", json=JOB, headers=keyed("order-7"))
        assert response.status_code == 202
        assert response.json()["id"] == orphan.id
        assert response.headers["idempotent-replayed"] == "true"
        assert await raw.ttl(store.keys.job(orphan.id)) == -1
    assert await queue_depth(settings) == 1


async def test_a_request_that_stalled_past_a_take_over_makes_no_second_job(
    store: Store,
) -> None:
    """Request A claims the key, then stalls; a retry takes the stale claim over.
    A's job is then refused (the key holds another claim), and A's failure does
    not free the key that the retry holds now."""
    keys = store.idempotency
    first = await keys.claim("", "order-8", "f" * 64, "3" * 32)
    assert first.ours
    stale = dataclasses.replace(first, age_s=CLAIM_STALE_S + 1)
    retry = await keys.take_over(stale, "4" * 32)
    assert retry is not None and retry.ours and retry.job_id == "4" * 32
    with pytest.raises(IdempotencyConflict, match="took it over"):
        await store.jobs.create([NewJob("3" * 32, "factorial", {"n": 7}, "")], first)
    await keys.release(first)
    again = await keys.claim("", "order-8", "f" * 64, "5" * 32)
    assert not again.ours and again.job_id == "4" * 32
    # A second take-over from the value first read loses: the key moved on.
    assert await keys.take_over(stale, "6" * 32) is None
    with pytest.raises(JobNotFound):
        await store.jobs.get("3" * 32)


async def test_a_different_request_with_a_claimed_key_is_a_conflict(store: Store) -> None:
    await store.idempotency.claim("", "order-9", "a" * 64, "7" * 32)
    with pytest.raises(IdempotencyConflict, match="different request"):
        await store.idempotency.claim("", "order-9", "b" * 64, "8" * 32)


async def test_a_stopping_api_finishes_the_confirmations_still_waiting_on_redis(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused until about 1.75 s, after the answer, which comes on the first refusal.
    confirms = RefusedConfirms(monkeypatch, refusals=4)
    async with api_client(settings) as client:
        response = await client.post("/v1/jobs", json=JOB)
        assert response.status_code == 202
        assert not confirms.confirmed, "confirmed before the answer: nothing left to finish"
    assert confirms.confirmed
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        assert await raw.ttl(store.keys.job(response.json()["id"])) == -1


async def test_deleting_a_job_frees_its_key_for_a_new_job_at_once(
    client: httpx.AsyncClient, store: Store
) -> None:
    first = (await client.post("/v1/jobs", json=JOB, headers=keyed("order-9"))).json()
    assert (await client.post(f"/v1/jobs/{first['id']}/cancel")).json()["status"] == "cancelled"
    assert (await client.delete(f"/v1/jobs/{first['id']}")).status_code == 204

    again = await client.post("/v1/jobs", json=JOB, headers=keyed("order-9"))
    assert again.status_code == 202
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first["id"]
    # ... and that new job is the key's from now on.
    replay = await client.post("/v1/jobs", json=JOB, headers=keyed("order-9"))
    assert replay.json()["id"] == again.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"


async def test_deleting_a_job_leaves_a_key_that_names_another_job(
    client: httpx.AsyncClient, store: Store
) -> None:
    first = (await client.post("/v1/jobs", json=JOB, headers=keyed("order-10"))).json()
    await client.post(f"/v1/jobs/{first['id']}/cancel")
    record = store.idempotency.record("", "order-10")
    # The key was taken over since (as after a stale claim): it names another job now.
    claim = text(await store._redis.get(record) or b"")
    assert first["id"] in claim
    await store._redis.set(record, claim.replace(first["id"], "f" * 32))
    assert (await client.delete(f"/v1/jobs/{first['id']}")).status_code == 204
    assert await store._redis.exists(record) == 1
