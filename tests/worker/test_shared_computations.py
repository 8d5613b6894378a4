"""Identical deterministic jobs: one computation, a copy of its outcome for each job.

`memo` records each execution in a log (see tests/support/tasks.py), so these
tests count computations, not only completions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gmpy2
import httpx
import redis.asyncio as redis

from factq.settings import Settings
from factq.state.computations import input_digest
from factq.state.store import Store
from tests.conftest import api_client, running_worker
from tests.support.backends import queue_depth
from tests.support.tasks import executions
from tests.support.waiting import until, until_true, wait_for_job, wait_for_jobs


async def submit(client: httpx.AsyncClient, task: str, **inputs: Any) -> str:
    response = await client.post("/v1/jobs", json={"task": task, "input": inputs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def submit_many(client: httpx.AsyncClient, count: int, task: str, **inputs: Any) -> list[str]:
    return list(await asyncio.gather(*(submit(client, task, **inputs) for _ in range(count))))


async def test_concurrent_identical_jobs_share_one_computation(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    """Six identical jobs across two workers: computed once, each job succeeded
    with its own copy of the result, its own events and result URL."""
    job_ids = await submit_many(client, 6, "memo", tag="twin", log=execution_log, sleep_s=1.0)
    async with running_worker(settings), running_worker(settings):
        jobs = await wait_for_jobs(client, job_ids, timeout_s=20)
    assert executions(execution_log) == [("twin", executions(execution_log)[0][1])]
    for job_id, job in jobs.items():
        assert job["status"] == "succeeded"
        assert job["result"] == {"tag": "twin", "url": f"/v1/jobs/{job_id}/result"}
        assert (await client.get(job["result"]["url"])).text == "twin"
        events = await store.events.read(job_id)
        assert [event.job.status for event in events] == [
            "queued",
            "running",
            "succeeded",
        ]


async def test_a_later_identical_job_reuses_the_stored_result(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    async with running_worker(settings):
        first = await wait_for_job(client, await submit(client, "memo", tag="a", log=execution_log))
        later = await wait_for_job(client, await submit(client, "memo", tag="a", log=execution_log))
        other = await wait_for_job(client, await submit(client, "memo", tag="b", log=execution_log))
    assert first["status"] == later["status"] == other["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["a", "b"]
    assert (await client.get(f"/v1/jobs/{later['id']}/result")).text == "a"


async def test_deleting_the_job_whose_outcome_is_stored_forgets_that_outcome(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    async with running_worker(settings):
        first = await wait_for_job(client, await submit(client, "memo", tag="a", log=execution_log))
        stored = store.computations.of("memo", first["input"])
        assert await store.computations.outcome(stored) == first["id"]
        assert (await client.delete(f"/v1/jobs/{first['id']}")).status_code == 204
        assert await store.computations.outcome(stored) is None
        # The next identical job computes it again, rather than finding a job gone.
        again = await wait_for_job(client, await submit(client, "memo", tag="a", log=execution_log))
    assert again["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["a", "a"]


async def test_identical_factorials_all_get_the_exact_value(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    job_ids = await submit_many(client, 4, "factorial", n=30_000)
    async with running_worker(settings):
        jobs = await wait_for_jobs(client, job_ids)
    digits = gmpy2.fac(30_000).digits().encode()
    for job_id in job_ids:
        assert jobs[job_id]["status"] == "succeeded"
        assert (await client.get(f"/v1/jobs/{job_id}/result")).content == digits


async def test_jobs_of_a_task_not_declared_deterministic_each_compute(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    job_ids = await submit_many(client, 3, "record", tag="same", log=execution_log)
    async with running_worker(settings):
        await wait_for_jobs(client, job_ids)
    assert [tag for tag, _ in executions(execution_log)] == ["same"] * 3


async def test_sharing_is_off_with_a_zero_cache_ttl(settings_factory: Any, tmp_path: Any) -> None:
    settings = settings_factory(result_cache_ttl_s=0)
    log = str(tmp_path / "executions.log")
    async with api_client(settings) as client, running_worker(settings):
        for _ in range(2):
            await wait_for_job(client, await submit(client, "memo", tag="off", log=log))
    assert [tag for tag, _ in executions(log)] == ["off", "off"]


async def test_a_shared_failure_fails_every_waiting_twin(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    job_ids = await submit_many(
        client, 3, "memo_fail", tag="doomed", log=execution_log, sleep_s=0.5
    )
    async with running_worker(settings):
        jobs = await wait_for_jobs(client, job_ids)
    assert len(executions(execution_log)) == 1
    for job in jobs.values():
        assert job["status"] == "failed"
        assert job["error"] == {"type": "task_error", "message": "ValueError: doomed failed"}


async def test_cancelling_the_computing_job_leaves_its_twin_to_compute(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    """The cancel ends one job only: the twin that waited on it takes over."""
    async with running_worker(settings):
        first, twin = await computing_and_waiting(client, "slow", execution_log, sleep_s=3)
        assert (await client.post(f"/v1/jobs/{first}/cancel")).status_code == 200
        jobs = await wait_for_jobs(client, [first, twin], timeout_s=20)
    assert jobs[first]["status"] == "cancelled"
    assert jobs[twin]["status"] == "succeeded"
    assert [tag for tag, _ in executions(execution_log)] == ["slow", "slow"]


async def test_cancelling_a_waiting_twin_ends_it_alone(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    async with running_worker(settings):
        first, twin = await computing_and_waiting(client, "kept", execution_log, sleep_s=2)
        assert (await client.post(f"/v1/jobs/{twin}/cancel")).status_code == 200
        cancelled = await wait_for_job(client, twin, timeout_s=5)
        assert cancelled["status"] == "cancelled"
        assert (await wait_for_job(client, first))["status"] == "succeeded"
    assert len(executions(execution_log)) == 1


async def test_a_lease_left_by_a_lost_worker_is_taken_over(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    """A job holding the computation whose worker died: its lease runs out, and
    the waiting twin computes."""
    job_input = {"tag": "orphaned", "log": execution_log, "sleep_s": 0.0}
    lease = store.keys.computing("memo", input_digest("memo", job_input))
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await raw.set(lease, "f" * 32, px=1500)
        async with running_worker(settings):
            job_id = await submit(client, "memo", **job_input)
            await until_running(client, job_id)
            assert not executions(execution_log)
            job = await wait_for_job(client, job_id, timeout_s=10)
    assert job["status"] == "succeeded"
    assert len(executions(execution_log)) == 1


async def test_a_deleted_result_is_computed_again(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    async with running_worker(settings):
        first = await wait_for_job(
            client, await submit(client, "memo", tag="gone", log=execution_log)
        )
        assert (await client.delete(f"/v1/jobs/{first['id']}")).status_code == 204
        again = await wait_for_job(
            client, await submit(client, "memo", tag="gone", log=execution_log)
        )
    assert again["status"] == "succeeded"
    assert (await client.get(f"/v1/jobs/{again['id']}/result")).text == "gone"
    assert len(executions(execution_log)) == 2


async def computing_and_waiting(
    client: httpx.AsyncClient, tag: str, log: str, *, sleep_s: float
) -> tuple[str, str]:
    """Two identical memo jobs: the first computing, the second waiting on it."""
    first = await submit(client, "memo", tag=tag, log=log, sleep_s=sleep_s)
    await until(lambda: executions(log))
    twin = await submit(client, "memo", tag=tag, log=log, sleep_s=sleep_s)
    await until_running(client, twin)
    return first, twin


async def until_running(client: httpx.AsyncClient, job_id: str) -> None:
    async def running() -> bool:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        return bool(job["status"] == "running")

    await until_true(running, timeout_s=5)


async def test_a_twin_waits_no_longer_than_leaves_time_for_its_own_run(
    settings_factory: Any, tmp_path: Any
) -> None:
    """Past what the broker's consumer timeout allows (here 62 - 60 - 1.5 s of
    run = 0.5 s of waiting), a twin computes without the lease."""
    settings = settings_factory(broker_consumer_timeout_s=62, job_timeout_s=1.5)
    log = str(tmp_path / "executions.log")
    job_input = {"tag": "stuck", "log": log, "sleep_s": 0.0}
    async with Store.open(settings) as store:
        lease = store.keys.computing("memo", input_digest("memo", job_input))
    async with redis.Redis.from_url(settings.redis_url.get_secret_value()) as raw:
        await raw.set(lease, "f" * 32, px=60_000)
    async with api_client(settings) as client, running_worker(settings):
        job = await wait_for_job(client, await submit(client, "memo", **job_input), timeout_s=10)
    assert job["status"] == "succeeded"
    assert len(executions(log)) == 1


async def test_a_failure_never_replaces_a_stored_success(store: Store) -> None:
    computation = store.computations.of("memo", {"tag": "t", "log": "-"})
    await store.computations.remember(computation, "a" * 32, 60, succeeded=True)
    await store.computations.remember(computation, "b" * 32, 30, succeeded=False)
    assert await store.computations.outcome(computation) == "a" * 32
    await store.computations.remember(computation, "c" * 32, 60, succeeded=True)
    assert await store.computations.outcome(computation) == "c" * 32


def test_a_new_task_version_is_a_new_computation() -> None:
    job_input = {"n": 5}
    assert input_digest("factorial", job_input) == input_digest("factorial", {"n": 5})
    assert input_digest("factorial", job_input, "2") != input_digest("factorial", job_input)
    assert input_digest("factorial", job_input) != input_digest("other", job_input)


async def computed(
    client: httpx.AsyncClient, settings: Settings, task: str, tag: str, log: str
) -> dict[str, Any]:
    """A job of the task, run by a worker that stops once it is done."""
    async with running_worker(settings):
        return await wait_for_job(client, await submit(client, task, tag=tag, log=log))


async def submit_again(
    client: httpx.AsyncClient, task: str, tag: str, log: str, **headers: str
) -> httpx.Response:
    """The same input once more, while no worker runs."""
    body = {"task": task, "input": {"tag": tag, "log": log}}
    return await client.post("/v1/jobs", json=body, headers=headers)


async def test_a_stored_result_answers_an_identical_job_as_it_is_made(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    """No worker runs when the twin comes: it ends at submission, with a copy of
    the result, and no message of it ever reaches the queue."""
    first = await computed(client, settings, "memo", "a", execution_log)
    response = await submit_again(client, "memo", "a", execution_log)
    assert response.status_code == 202
    twin = response.json()
    assert twin["id"] != first["id"]
    assert twin["status"] == "succeeded"
    assert twin["result"] == {"tag": "a", "url": f"/v1/jobs/{twin['id']}/result"}
    assert twin["started_at"] is not None and twin["finished_at"] is not None
    assert (await client.get(twin["result"]["url"])).text == "a"
    assert await queue_depth(settings) == 0
    events = await store.events.read(twin["id"])
    assert [(event.seq, event.job.status) for event in events] == [(1, "queued"), (2, "succeeded")]
    assert [tag for tag, _ in executions(execution_log)] == ["a"]
    # Kept as long as any finished job, not as long as an unconfirmed one.
    assert await store._redis.ttl(store.keys.job(twin["id"])) > settings.provisional_ttl_s


async def test_a_wait_on_a_job_answered_at_submission_is_a_200(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    await computed(client, settings, "memo", "w", execution_log)
    response = await submit_again(client, "memo", "w", execution_log, Prefer="wait=5")
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.headers["Preference-Applied"] == "wait=5"


async def test_a_batch_answers_what_is_stored_and_queues_the_rest(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    await computed(client, settings, "memo", "kept", execution_log)
    items = [
        {"task": "memo", "input": {"tag": tag, "log": execution_log}}
        for tag in ("new", "kept", "new")
    ]
    response = await client.post("/v1/jobs/batch", json={"jobs": items})
    assert response.status_code == 202
    jobs = response.json()["jobs"]
    assert [job["status"] for job in jobs] == ["queued", "succeeded", "queued"]
    assert await queue_depth(settings) == 2
    async with running_worker(settings):
        done = await wait_for_jobs(client, [job["id"] for job in jobs])
    assert {job["status"] for job in done.values()} == {"succeeded"}
    assert sorted(tag for tag, _ in executions(execution_log)) == ["kept", "new"]


async def test_a_stored_failure_does_not_answer_a_later_job(
    client: httpx.AsyncClient, settings: Settings, execution_log: str
) -> None:
    failed = await computed(client, settings, "memo_fail", "f", execution_log)
    assert failed["status"] == "failed"
    later = (await submit_again(client, "memo_fail", "f", execution_log)).json()
    assert later["status"] == "queued"
    assert await queue_depth(settings) == 1


async def test_a_job_whose_stored_result_is_gone_is_queued(
    client: httpx.AsyncClient, settings: Settings, store: Store, execution_log: str
) -> None:
    first = await computed(client, settings, "memo", "x", execution_log)
    # The result expired (or was evicted) while the stored outcome still names its job.
    await store._redis.delete(store.keys.result(first["id"], "text"))
    later = (await submit_again(client, "memo", "x", execution_log)).json()
    assert later["status"] == "queued"
    assert later["started_at"] is None
    assert await queue_depth(settings) == 1
