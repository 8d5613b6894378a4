"""The suite's cleanup finds every key a namespace holds from its roots (see
`tests.support.backends.namespace_keys`), so that no test walks the keyspace of
a Redis shared with other programs. Checked here on a redis-server of its own,
where counting every key is cheap and exact: whatever factq writes, the
cleanup must find."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis.asyncio as redis

from factq.settings import Settings
from tests.conftest import api_client, running_worker
from tests.support.backends import delete_namespace
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for_job, wait_for_jobs

KEYS = ("key-one", "key-two")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def exercise(client: httpx.AsyncClient, log: str) -> None:
    """Every kind of key the API and a worker write: jobs with and without an
    Idempotency-Key, for two owners, a batch, identical jobs (a stored outcome
    and a lease), a cancelled job, a deleted job, rate-limit and in-flight
    counters."""
    ids = []
    for key in KEYS:
        for n in (7, 7, 8):
            response = await client.post(
                "/v1/jobs", json={"task": "factorial", "input": {"n": n}}, headers=auth(key)
            )
            assert response.status_code == 202, response.text
            ids.append((key, response.json()["id"]))
    keyed = await client.post(
        "/v1/jobs",
        json={"task": "factorial", "input": {"n": 9}},
        headers={**auth(KEYS[0]), "Idempotency-Key": "order-1"},
    )
    assert keyed.status_code == 202
    batch = await client.post(
        "/v1/jobs/batch",
        json={"jobs": [{"task": "factorial", "input": {"n": n}} for n in (3, 4)]},
        headers=auth(KEYS[1]),
    )
    assert batch.status_code == 202, batch.text
    for key, job_id in ids:
        client.headers.update(auth(key))
        await wait_for_job(client, job_id)
    client.headers.update(auth(KEYS[1]))
    await wait_for_jobs(client, [job["id"] for job in batch.json()["jobs"]])
    slow = await client.post(
        "/v1/jobs",
        json={"task": "record", "input": {"tag": "slow", "log": log, "sleep_s": 30}},
        headers=auth(KEYS[1]),
    )
    assert (await client.post(f"/v1/jobs/{slow.json()['id']}/cancel")).status_code == 200
    assert (await wait_for_job(client, slow.json()["id"]))["status"] == "cancelled"
    client.headers.update(auth(KEYS[0]))
    await wait_for_job(client, keyed.json()["id"])
    assert (await client.delete(f"/v1/jobs/{ids[0][1]}")).status_code == 204


async def test_the_cleanup_finds_every_key_a_namespace_holds(
    private_redis: RedisServer, settings_factory: Callable[..., Settings], execution_log: str
) -> None:
    settings = settings_factory(
        redis_url=private_redis.url,
        api_keys=",".join(KEYS),
        rate_limit="1000/minute",
        max_in_flight_per_key=100,
    )
    async with api_client(settings) as client, running_worker(settings):
        await exercise(client, execution_log)
    async with redis.Redis.from_url(private_redis.url) as raw:
        written = await raw.dbsize()
        await delete_namespace(settings)
        left = await raw.dbsize()
        some = {await raw.randomkey() for _ in range(10)} if left else set()
    assert written > 20
    assert left == 0, f"{left} keys the cleanup did not find, such as {some}"
