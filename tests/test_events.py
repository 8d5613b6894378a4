"""The event hub and `follow` on the real Redis: routing, overflow, and filling gaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio.client import PubSub

from factq.schema import JobError, JobEvent, JobStatus
from factq.settings import Settings
from factq.state import events
from factq.state.events import RESYNC, EventHub, SlowSubscriber, Subscription, follow
from factq.state.records import NewJob
from factq.state.store import Store
from factq.submit import new_job_id
from tests.support.redis_server import RedisServer
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


async def test_a_subscription_gives_its_events_in_order_then_resync_when_quiet(
    store: Store,
) -> None:
    job_id = await new_job(store)
    first = await store.events.current(job_id)
    second = first.model_copy(update={"seq": first.seq + 1})
    subscription = Subscription(job_id)
    subscription.deliver(first)
    subscription.deliver(second)
    assert await subscription.next(1) is first
    assert await subscription.next(1) is second
    assert await subscription.next(0.05) is RESYNC
    # One delivered while the follower waits wakes it.
    waiting = asyncio.create_task(subscription.next(5))
    await until(lambda: subscription._waiter is not None)
    subscription.deliver(first)
    assert await waiting is first


async def test_a_follower_cancelled_while_it_waits_leaves_no_waiter(store: Store) -> None:
    subscription = Subscription(await new_job(store))
    waiting = asyncio.create_task(subscription.next(5))
    await until(lambda: subscription._waiter is not None)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert subscription._waiter is None
    subscription.deliver(RESYNC)  # nobody waits: kept for the next read
    assert await subscription.next(1) is RESYNC


async def test_the_hub_routes_each_event_to_its_jobs_subscribers(
    hub: EventHub, store: Store
) -> None:
    watched, other = await new_job(store), await new_job(store)
    with hub.subscribe(watched) as subscription:
        # Garbage on the channel is skipped, not fatal.
        await store._redis.publish(store.keys.events_channel(other), b'{"job_id":"' + b"x" * 40)
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


async def test_idle_followers_cost_redis_nothing_but_the_hubs_pings(
    private_redis: RedisServer,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 followers of jobs that do not change, for several liveness periods:
    the commands Redis serves meanwhile are the hub's pings, not reads per follower."""
    monkeypatch.setattr(events, "HUB_LIVENESS_S", 0.2)
    settings = settings_factory(redis_url=private_redis.url)
    async with Store.open(settings) as store, EventHub.open(settings) as hub:
        job_ids = [await new_job(store) for _ in range(200)]
        first_events: list[JobEvent] = []
        followers = [
            asyncio.create_task(_collect(follow(store.events, hub, job_id, ""), first_events))
            for job_id in job_ids
        ]
        try:
            await until(lambda: len(first_events) == len(job_ids))
            before = await _commands_served(store)
            await asyncio.sleep(1.0)  # five liveness periods, on purpose: the window measured
            served = await _commands_served(store) - before - 1  # the INFO of the first read
            assert served <= 10, f"{served} commands while 200 followers were idle"
            # Still live: a change reaches its follower at once.
            await store.runs.mark_running(job_ids[0])
            await until(lambda: len(first_events) == len(job_ids) + 1)
        finally:
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)


async def _commands_served(store: Store) -> int:
    stats = await store._redis.info("stats")
    return int(stats["total_commands_processed"])


async def test_a_hub_whose_connection_stops_answering_reconnects_and_followers_resync(
    hub: EventHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ping left unanswered (a connection gone silent) makes the hub reconnect, and
    its followers read their streams: a change made meanwhile is not lost."""
    job_id = await new_job(store)
    seen: list[JobEvent] = []
    async with in_background(_collect(follow(store.events, hub, job_id, ""), seen)):
        await until(lambda: len(seen) == 1)
        monkeypatch.setattr(events, "HUB_LIVENESS_S", 0.2)
        # Every message is swallowed, and so is the answer to the hub's ping.
        monkeypatch.setattr(hub, "_route", lambda data: None)
        original = PubSub.get_message
        swallowed = 0

        async def deaf(pubsub: PubSub, *args: Any, **kwargs: Any) -> Any:
            nonlocal swallowed
            await original(pubsub, *args, **kwargs)
            swallowed += 1
            return None

        monkeypatch.setattr(PubSub, "get_message", deaf)
        await store.runs.mark_running(job_id)
        # A quiet spell, then the ping's answer, both lost: the hub gives up on
        # the connection after the second.
        await until(lambda: swallowed >= 2)
        monkeypatch.undo()
        await until(lambda: len(seen) == 2, timeout_s=10)
    assert [event.seq for event in seen] == [1, 2]
