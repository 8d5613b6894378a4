"""The event hub and `follow` on the real Redis: routing, overflow, and filling gaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from factq.schema import JobError, JobEvent, JobStatus
from factq.settings import Settings
from factq.state import events
from factq.state.events import EventHub, SlowSubscriber, Subscription, follow
from factq.state.records import NewJob
from factq.state.store import Store
from factq.submit import new_job_id
from tests.support.waiting import in_background, until


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[EventHub]:
    async with EventHub.open(settings) as hub:
        yield hub


async def new_job(store: Store) -> str:
    job = NewJob(new_job_id(), "factorial", {"n": 5}, "")
    await store.jobs.create([job])
    await store.jobs.confirm([job.job_id])
    return job.job_id


async def test_a_subscriber_a_whole_buffer_behind_is_dropped(store: Store) -> None:
    job_id = await new_job(store)
    event = await store.events.current(job_id)
    subscription = Subscription(job_id, size=2)
    for _ in range(3):
        subscription.deliver(event)
    with pytest.raises(SlowSubscriber):
        await subscription.next(1)


async def test_the_hub_routes_each_event_to_its_jobs_subscribers(
    hub: EventHub, store: Store
) -> None:
    watched, other = await new_job(store), await new_job(store)
    with hub.subscribe(watched) as subscription:
        # Garbage on the channel is skipped, not fatal.
        await store._redis.publish(store.keys.events_channel, b'{"job_id":"' + b"x" * 40)
        await store.runs.mark_running(other)
        await store.runs.mark_running(watched)
        item = await subscription.next(5)
        assert hub.subscriber_count == 1
    assert isinstance(item, JobEvent)
    assert (item.job.id, item.seq, item.job.status) == (watched, 2, JobStatus.RUNNING)
    assert hub.subscriber_count == 0


async def test_follow_fills_a_gap_left_by_a_lost_pubsub_message(
    hub: EventHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await new_job(store)
    route = hub._route
    dropped: list[bytes] = []

    def lossy(data: bytes) -> None:
        # Pub/sub is at-most-once: lose the "running" event on its way.
        if b'"status":"running"' in data and not dropped:
            dropped.append(data)
            return
        route(data)

    monkeypatch.setattr(hub, "_route", lossy)
    seen: list[JobEvent] = []

    async def consume() -> None:
        async for event in follow(store.events, hub, job_id, ""):
            seen.append(event)

    async with in_background(consume()) as following:
        # Subscribed, and the job read as it was: the changes come after.
        await until(lambda: seen)
        await store.runs.mark_running(job_id)
        await store.runs.mark_succeeded(job_id, {"digits": 3}, {"decimal": b"120", "hex": b"78"})
        await asyncio.wait_for(following, 10)
    assert dropped
    assert [(e.seq, e.job.status) for e in seen] == [
        (1, JobStatus.QUEUED),
        (2, JobStatus.RUNNING),
        (3, JobStatus.SUCCEEDED),
    ]


async def test_follow_finds_a_lost_final_event_after_a_quiet_spell(
    hub: EventHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "RESYNC_AFTER_S", 0.2)
    monkeypatch.setattr(hub, "_route", lambda data: None)  # every live event lost
    job_id = await new_job(store)
    await store.runs.mark_running(job_id)
    seen: list[JobEvent] = []
    async with in_background(
        _collect(follow(store.events, hub, job_id, "", after=0), seen)
    ) as following:
        # Both logged events sent: the follower waits on live events, which are lost.
        await until(lambda: len(seen) == 2)
        await store.runs.mark_failed(job_id, JobError(type="task_error", message="boom"))
        await asyncio.wait_for(following, 10)
    assert [e.seq for e in seen] == [1, 2, 3]
    assert seen[-1].job.status is JobStatus.FAILED


async def _collect(stream: AsyncIterator[JobEvent], into: list[JobEvent]) -> None:
    async for event in stream:
        into.append(event)
