"""The Lua state-change scripts on the real Redis: forward only, written once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as redis

from factq.errors import FactqError, JobNotFound, NotFinished
from factq.schema import JobError, JobStatus
from factq.settings import Settings
from factq.state import lua
from factq.state.records import NewJob, Outcome
from factq.state.store import Store
from factq.submit import new_job_id
from tests.support.redis_server import RedisServer

RESULTS = {"decimal": b"120", "hex": b"78"}
SUMMARY = {"digits": 3, "head": "120", "tail": "120"}


@pytest.fixture
async def raw(settings: Settings):
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    await client.aclose()


async def queued(store: Store, owner: str = "") -> str:
    job = NewJob(new_job_id(), "factorial", {"n": 5}, owner)
    await store.jobs.create([job])
    await store.jobs.confirm([job.job_id])
    return job.job_id


async def events(raw: redis.Redis, store: Store, job_id: str) -> list[tuple[int, str]]:
    """(seq, status) of each event in the job's stream, whose entry ids are seq-0."""
    entries: Any = await raw.xrange(store.keys.events(job_id))
    return [
        (int(entry_id.split(b"-")[0]), json.loads(fields[b"job"])["status"])
        for entry_id, fields in entries
    ]


async def test_a_new_job_lives_only_provisionally_until_confirmed(store: Store, raw) -> None:
    job = NewJob(new_job_id(), "factorial", {"n": 5}, "")
    [created] = await store.jobs.create([job])
    assert created.status is JobStatus.QUEUED
    assert created.attempts == 0
    assert 0 < await raw.ttl(store.keys.job(job.job_id)) <= store.settings.provisional_ttl_s
    await store.jobs.confirm([job.job_id])
    assert await raw.ttl(store.keys.job(job.job_id)) == -1
    assert await raw.ttl(store.keys.events(job.job_id)) == -1


async def test_the_happy_path_writes_one_event_per_change(store: Store, raw) -> None:
    job_id = await queued(store)
    started = await store.runs.mark_running(job_id)
    assert started.outcome == "started"
    assert started.job is not None and started.job.attempts == 1
    done = await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)
    assert done.outcome == "finished"
    job = await store.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result is not None and job.result["digits"] == 3
    assert job.metrics.queue_s is not None and job.metrics.run_s is not None
    assert await events(raw, store, job_id) == [(1, "queued"), (2, "running"), (3, "succeeded")]
    ttl = store.settings.result_ttl_s
    for key in (store.keys.job(job_id), store.keys.events(job_id)):
        assert 0 < await raw.ttl(key) <= ttl
    for fmt, value in RESULTS.items():
        assert await raw.get(store.keys.result(job_id, fmt)) == value
        assert 0 < await raw.ttl(store.keys.result(job_id, fmt)) <= ttl


async def test_a_terminal_state_is_written_once(store: Store, raw) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)
    # A redelivered copy of the message tries everything again.
    again = await store.runs.mark_running(job_id)
    assert again.outcome == "terminal"
    late = await store.runs.mark_succeeded(job_id, {"digits": 1}, {"decimal": b"9", "hex": b"9"})
    assert late.outcome == "terminal"
    failed = await store.runs.mark_failed(job_id, JobError(type="task_error", message="late"))
    assert failed.outcome == "terminal"
    job = await store.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.error is None
    assert await raw.get(store.keys.result(job_id, "decimal")) == b"120"
    assert [status for _, status in await events(raw, store, job_id)].count("succeeded") == 1


async def test_a_redelivery_runs_again_with_one_more_attempt(store: Store) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    again = await store.runs.mark_running(job_id)
    assert again.outcome == "started"
    assert again.job is not None and again.job.attempts == 2


async def test_only_a_running_job_can_succeed(store: Store) -> None:
    job_id = await queued(store)
    with pytest.raises(Exception, match="cannot succeed"):
        await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)
    assert (await store.jobs.get(job_id)).status is JobStatus.QUEUED


async def test_a_queued_job_can_fail(store: Store) -> None:
    job_id = await queued(store)
    failed = await store.runs.mark_failed(job_id, JobError(type="expired", message="too late"))
    assert failed.job is not None and failed.job.status is JobStatus.FAILED
    assert failed.job.error is not None and failed.job.error.type == "expired"


async def test_a_cancel_asked_while_running_wins_over_success(store: Store, raw) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    await raw.hset(store.keys.job(job_id), "cancel_requested", "1")
    done = await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)
    assert done.job is not None and done.job.status is JobStatus.CANCELLED
    assert await raw.exists(store.keys.result(job_id, "decimal")) == 0


async def test_changes_are_published_live(store: Store, raw, settings: Settings) -> None:
    pubsub = raw.pubsub()
    await pubsub.subscribe(*store.keys.events_channels)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    seen = []
    for _ in range(2):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        seen.append(json.loads(message["data"]))
    await pubsub.aclose()
    assert [(m["job_id"], m["seq"], m["job"]["status"]) for m in seen] == [
        (job_id, 1, "queued"),
        (job_id, 2, "running"),
    ]
    assert all("owner" not in m["job"] for m in seen)


async def test_another_owners_job_is_not_found(store: Store) -> None:
    job_id = await queued(store, owner="alice")
    assert (await store.jobs.get(job_id, "alice")).id == job_id
    with pytest.raises(JobNotFound):
        await store.jobs.get(job_id, "bob")


async def test_unknown_jobs(store: Store) -> None:
    job_id = new_job_id()
    with pytest.raises(JobNotFound):
        await store.jobs.get(job_id)
    assert (await store.runs.mark_running(job_id)).outcome == "missing"
    assert (await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)).outcome == "missing"


async def test_only_a_finished_job_can_be_deleted(store: Store, raw) -> None:
    job_id = await queued(store)
    with pytest.raises(NotFinished):
        await store.jobs.delete(job_id, "", list(RESULTS))
    await store.runs.mark_running(job_id)
    await store.runs.mark_succeeded(job_id, SUMMARY, RESULTS)
    with pytest.raises(JobNotFound):
        await store.jobs.delete(job_id, "mallory", list(RESULTS))
    await store.jobs.delete(job_id, "", list(RESULTS))
    keys = [store.keys.job(job_id), store.keys.events(job_id)]
    keys += [store.keys.result(job_id, fmt) for fmt in RESULTS]
    assert await raw.exists(*keys) == 0


async def test_results_stream_in_chunks(store: Store) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    value = b"1234567890" * 1000
    await store.runs.mark_succeeded(job_id, SUMMARY, {"decimal": value})
    size = await store.results.size(job_id, "decimal")
    chunks = [chunk async for chunk in store.results.chunks(job_id, "decimal", size, 4096)]
    assert b"".join(chunks) == value
    assert [len(c) for c in chunks] == [4096, 4096, 1808]


async def test_concurrent_completions_store_one_outcome(store: Store, raw) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    outcomes = await asyncio.gather(
        *(
            store.runs.mark_succeeded(job_id, {"digits": i}, {"decimal": str(i).encode()})
            for i in range(20)
        )
    )
    assert [o.outcome for o in outcomes].count(Outcome.FINISHED) == 1
    job = await store.jobs.get(job_id)
    assert job.result is not None
    assert await raw.get(store.keys.result(job_id, "decimal")) == str(job.result["digits"]).encode()


async def test_the_lost_flag_belongs_to_the_last_attempt(store: Store) -> None:
    job_id = await queued(store)
    await store.runs.mark_running(job_id)
    await store.runs.note_lost_attempt(job_id)
    assert await store.runs.was_last_attempt_lost(job_id)
    await store.runs.mark_running(job_id)
    assert not await store.runs.was_last_attempt_lost(job_id)


async def test_durability_warnings_name_what_could_lose_work(store: Store, raw) -> None:
    config = await raw.config_get("appendonly")
    warnings = await store.durability_warnings()
    if config["appendonly"] == "yes":
        assert not any("AOF" in warning for warning in warnings)
    else:
        assert any("appendonly yes" in warning for warning in warnings)


async def test_scripts_redis_forgot_are_loaded_again_and_each_call_runs_once(
    private_redis: RedisServer, settings_factory: Callable[..., Settings]
) -> None:
    """After a restart Redis knows no script: a pipelined creation still makes each
    job once, indexed once (no call of the round trip ran twice)."""
    settings = settings_factory(redis_url=private_redis.url)
    async with Store.open(settings) as store:
        first = [NewJob(new_job_id(), "factorial", {"n": n}, "alice") for n in range(3)]
        await store.jobs.create(first)
        await store._redis.script_flush()
        again = [NewJob(new_job_id(), "factorial", {"n": n}, "alice") for n in range(3)]
        created = await store.jobs.create(again)
        assert [job.id for job in created] == [job.job_id for job in again]
        await store.jobs.confirm([job.job_id for job in again])
        assert await store._redis.ttl(store.keys.job(again[0].job_id)) == -1
        listed, _ = await store.index.page("alice", status=None, limit=10, cursor=None)
        assert [job.id for job in listed] == [job.job_id for job in reversed(first + again)]
        assert await store._redis.get(store.keys.owner_counter("alice")) == b"6"


async def test_creations_made_in_the_same_turn_share_one_round_trip(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty requests creating a job at once: one pipeline to Redis; a request
    whose job id is taken fails alone."""
    round_trips = 0
    send = lua._replies

    async def counted(client: Any, calls: Any, replicas: int = 0) -> list[Any]:
        nonlocal round_trips
        round_trips += 1
        return await send(client, calls, replicas)

    monkeypatch.setattr(lua, "_replies", counted)
    taken = NewJob(new_job_id(), "factorial", {"n": 1}, "")
    await store.jobs.create([taken])
    round_trips = 0
    jobs = [NewJob(new_job_id(), "factorial", {"n": n}, "") for n in range(20)]
    outcomes = await asyncio.gather(
        *(store.jobs.create([job]) for job in jobs),
        store.jobs.create([taken]),
        return_exceptions=True,
    )
    assert round_trips == 1
    assert [created[0].id for created in outcomes[:20]] == [job.job_id for job in jobs]  # type: ignore[index]
    assert isinstance(outcomes[20], FactqError) and "already taken" in str(outcomes[20])
