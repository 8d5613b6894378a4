"""The store on a Redis Cluster: every state change in one slot, live events over
sharded pub/sub, scripts reloaded where a node has none, and FACTQ_REDIS_MIN_REPLICAS
refusing a change that no replica confirmed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from redis.crc import key_slot

from factq.api.ratelimit import SubmissionLimiter
from factq.errors import BackendUnavailable, IdempotencyConflict, RateLimited
from factq.schema import JobError, JobEvent, JobStatus, WebhookRequest
from factq.settings import Settings
from factq.state.events import EventHub
from factq.state.records import NewJob, Outcome
from factq.state.store import Store
from factq.submit import new_job_id
from tests.conftest import make_settings
from tests.support import clusters

pytestmark = pytest.mark.timeout(180)

FORMATS = ["decimal", "hex"]


@pytest.fixture
def cluster_settings(redis_cluster: clusters.RedisCluster) -> Settings:
    return make_settings(
        redis_cluster=True,
        redis_url=",".join(f"redis://127.0.0.1:{port}/0" for port in redis_cluster.ports),
        redis_min_replicas=1,
    )


@pytest.fixture
async def store(cluster_settings: Settings) -> AsyncIterator[Store]:
    async with Store.open(cluster_settings) as store:
        yield store


async def made(store: Store, job_input: dict[str, Any] | None = None) -> str:
    job = NewJob(new_job_id(), "factorial", job_input or {"n": 5}, "")
    await store.jobs.create([job])
    await store.jobs.confirm([job.job_id])
    return job.job_id


async def test_jobs_spread_over_every_master_and_each_change_stays_in_its_slot(
    store: Store, redis_cluster: clusters.RedisCluster
) -> None:
    ids = [await made(store) for _ in range(48)]
    masters = {await redis_cluster.master_of(store.keys.job(job_id)) for job_id in ids}
    assert len(masters) == 3
    for job_id in ids:
        slots = {key_slot(key.encode()) for key in store.keys.job_keys(job_id)}
        slots |= {key_slot(store.keys.result(job_id, fmt).encode()) for fmt in FORMATS}
        slots.add(key_slot(store.keys.webhooks(job_id).encode()))
        slots.add(key_slot(store.keys.events_channel(job_id).encode()))
        assert len(slots) == 1
    first, other = ids[:2]
    assert (await store.runs.mark_running(first)).outcome is Outcome.STARTED
    await store.runs.mark_succeeded(first, {"digits": 3}, {"decimal": b"120", "hex": b"78"})
    # Identical work, read from another slot, then written to this one.
    await store.runs.mark_running(other)
    shared = await store.runs.finish_like(other, first, FORMATS)
    assert shared.job is not None and shared.job.status is JobStatus.SUCCEEDED
    assert await store._redis.get(store.keys.result(other, "hex")) == b"78"
    await store.jobs.delete(other, "", FORMATS)
    assert not await store._redis.exists(store.keys.job(other))


async def test_an_idempotency_key_makes_one_job_across_slots(store: Store) -> None:
    job_id = new_job_id()
    claim = await store.idempotency.claim("", "the-key", "fingerprint", job_id)
    assert claim.ours
    [job] = await store.jobs.create([NewJob(job_id, "factorial", {"n": 5}, "")], claim)
    assert job.id == job_id
    # Another request took the key over: this one's job is not kept.
    stalled = await store.idempotency.claim("", "key-two", "fingerprint", new_job_id())
    await store._redis.set(stalled.record, "fingerprint:someone-else:0")
    lost = NewJob(stalled.job_id, "factorial", {"n": 5}, "")
    with pytest.raises(IdempotencyConflict):
        await store.jobs.create([lost], stalled)
    assert not await store._redis.exists(store.keys.job(lost.job_id))
    # Deleting the job frees its key, in its own slot.
    await store.runs.mark_running(job_id)
    await store.runs.mark_failed(job_id, JobError(type="task_failed", message="no"))
    await store.jobs.delete(job_id, "", FORMATS)
    assert not await store._redis.exists(claim.record)


async def test_live_events_arrive_over_sharded_pub_sub(
    store: Store, cluster_settings: Settings
) -> None:
    async with EventHub.open(cluster_settings) as hub:
        ids = [await made(store) for _ in range(16)]
        with contextlib.ExitStack() as stack:
            subscriptions = [stack.enter_context(hub.subscribe(job_id)) for job_id in ids]
            for job_id in ids:
                await store.runs.mark_running(job_id)
            # Straight from the channel: a follower reads its stream only after
            # minutes of quiet or a gap, never within these seconds.
            items = await asyncio.gather(*(s.next(5) for s in subscriptions))
    assert all(
        isinstance(item, JobEvent) and item.job.status is JobStatus.RUNNING for item in items
    )


async def test_a_node_without_the_scripts_is_given_them(
    store: Store, redis_cluster: clusters.RedisCluster
) -> None:
    """As on a replica just promoted: Redis copies no script to replicas."""
    for port in await redis_cluster.masters():
        async with redis.Redis(port=port) as node:
            await node.script_flush()
    job_id = await made(store)
    assert (await store.runs.mark_running(job_id)).outcome is Outcome.STARTED


async def test_a_change_no_replica_confirms_is_refused(
    store: Store, redis_cluster: clusters.RedisCluster
) -> None:
    job_id = await made(store)
    master = await redis_cluster.master_of(store.keys.job(job_id))
    replica = await _replica_of(redis_cluster, master)
    redis_cluster.nodes[replica].kill()
    try:
        with pytest.raises(BackendUnavailable, match="replica"):
            await store.runs.mark_running(job_id)
    finally:
        await redis_cluster.restart(replica)
    # Made on the master all the same: the retry finds it running, and goes on.
    assert (await store.runs.mark_running(job_id)).outcome is Outcome.STARTED


async def _replica_of(cluster: clusters.RedisCluster, master: int) -> int:
    async with redis.Redis(port=master) as node:
        info: dict[str, Any] = await node.info("replication")
    return int(info["slave0"]["port"])


async def test_webhook_deliveries_are_read_from_every_shard(store: Store) -> None:
    """Each shard's stream lives in its own slot: no one command reads them all."""
    hook = WebhookRequest(url="https://hooks.example/factq", events=["started"])
    ids = []
    for _ in range(24):
        job = NewJob(new_job_id(), "factorial", {"n": 5}, "", webhook=hook)
        await store.jobs.create([job])
        await store.jobs.confirm([job.job_id])
        await store.runs.mark_running(job.job_id)
        ids.append(job.job_id)
    assert len({store.keys.webhooks(job_id) for job_id in ids}) > 3
    await store.webhooks.ensure_group()
    found: list[str] = []
    for _ in range(50):
        tasks = await store.webhooks.next("sender", count=100, block_ms=100, min_idle_ms=60_000)
        for task in tasks:
            await store.webhooks.finish(task)
        found += [task.job_id for task in tasks]
        if len(found) >= len(ids):
            break
    assert sorted(found) == sorted(ids)


async def test_the_hub_follows_a_shard_channel_whose_slot_moves(
    store: Store, cluster_settings: Settings, redis_cluster: clusters.RedisCluster
) -> None:
    """Redis unsubscribes a shard channel when its slot leaves the node: the hub
    subscribes again where the slot went, and live events keep coming."""
    first = await made(store)
    slot = key_slot(store.keys.events_channel(first).encode())
    source = await redis_cluster.master_of(slot)
    target = next(port for port in await redis_cluster.masters() if port != source)
    async with EventHub.open(cluster_settings) as hub:
        assert await _live_event(store, hub, first)
        await _move_slot(slot, source, target)
        try:
            assert await redis_cluster.master_of(slot) == target
            # Another job of the same shard, after the move: heard live again.
            async with asyncio.timeout(30):
                while not await _live_event(store, hub, await _made_in_slot(store, slot)):
                    pass
        finally:
            await _move_slot(slot, target, source)


async def _live_event(store: Store, hub: EventHub, job_id: str) -> bool:
    """Whether the job's start reaches the hub as a live event within 2 s (not a
    resync, which a reconnect of the hub sends first)."""
    with hub.subscribe(job_id) as subscription:
        await store.runs.mark_running(job_id)
        item = await subscription.next(2)
    return isinstance(item, JobEvent)


async def _made_in_slot(store: Store, slot: int) -> str:
    while True:
        job_id = new_job_id()
        if key_slot(store.keys.job(job_id).encode()) == slot:
            await store.jobs.create([NewJob(job_id, "factorial", {"n": 5}, "")])
            await store.jobs.confirm([job_id])
            return job_id


async def _move_slot(slot: int, source: int, target: int) -> None:
    """Reshard one slot from one master to another, its keys with it, as
    `redis-cli --cluster reshard` does."""
    async with redis.Redis(port=source) as src, redis.Redis(port=target) as dst:
        source_id, target_id = (
            (await src.cluster("MYID")).decode(),
            (await dst.cluster("MYID")).decode(),
        )
        await dst.cluster("SETSLOT", slot, "IMPORTING", source_id)
        await src.cluster("SETSLOT", slot, "MIGRATING", target_id)
        while keys := await src.cluster("GETKEYSINSLOT", slot, 100):
            await src.migrate("127.0.0.1", target, keys, 0, 5000)
        for node in (dst, src):
            await node.cluster("SETSLOT", slot, "NODE", target_id)


async def test_the_rate_limit_counts_on_the_cluster(cluster_settings: Settings) -> None:
    limited = cluster_settings.model_copy(update={"rate_limit": "3/minute"})
    limiter = SubmissionLimiter(limited)
    try:
        await limiter.admit("someone", 2)
        await limiter.admit("someone", 1)
        with pytest.raises(RateLimited):
            await limiter.admit("someone", 1)
        await limiter.admit("someone-else", 3)
    finally:
        await limiter.aclose()
