"""Job events: each job's log (a stream), and live events over one Redis pub/sub
connection per process, fanned out by job id.

Pub/sub is at-most-once; each job's event stream in Redis is the truth. A
follower subscribes first, then reads the job's state (or its logged events),
then forwards live events, dropping any `seq` it already sent and reading the
stream again whenever it sees a gap or the hub reconnects. So no event is
missed or repeated between the first one and the last.

Redis drops pub/sub messages only with the connection (a subscriber over its
output buffer limit is disconnected), so the hub's liveness covers quiet
spells: it pings its connection when nothing came for a while and reconnects
when no answer comes, and every follower then reads its stream. Idle
followers cost Redis nothing; a follower still reads its stream after a long
quiet spell (RESYNC_AFTER_S), as a safety net, not as the way events arrive.

On Redis Cluster, events go out on each shard's channel (sharded pub/sub):
the hub subscribes to each on the master that holds its slot, one
connection per master, and starts over, on the cluster's new layout, when
any of them fails or Redis says a channel's slot moved (a failover, a
resharding).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from factq import metrics
from factq.aio import cancel_and_wait
from factq.errors import BackendUnavailable, FactqError
from factq.schema import JobEvent
from factq.settings import Settings
from factq.state.connection import (
    backend_errors,
    connect,
    connect_listener,
    node_client,
    text,
)
from factq.state.jobs import JobRecords
from factq.state.keys import Keys
from factq.state.records import event_from_fields

logger = logging.getLogger(__name__)

SUBSCRIPTION_BUFFER: Final = 256
# A follower that heard nothing this long reads its stream (a safety net).
RESYNC_AFTER_S: Final = 300.0
# The hub pings its connection after this long without a message, and
# reconnects when the answer has not come after as long again.
HUB_LIVENESS_S: Final = 5.0
RECONNECT_DELAY_S: Final = 1.0
# Published events start with this, then the 32-hex-digit job id: the hub
# routes by id without parsing events that no local subscriber wants.
_PREFIX: Final = b'{"job_id":"'
_ID_END: Final = len(_PREFIX) + 32


class SlowSubscriber(FactqError):
    """A subscriber fell a whole buffer behind; it is dropped, not waited for."""

    type = "slow_subscriber"


class _Resync:
    """Marker: events may have been lost; read the job's stream."""


RESYNC: Final = _Resync()


class Subscription:
    """Live events of one job for one follower, in a bounded buffer.

    Not an asyncio.Queue: a process holds one per follower, thousands at once,
    and a queue's four deques cost more memory than the socket it serves. One
    follower reads it, so a list and one waiting future do.
    """

    __slots__ = ("_items", "_size", "_waiter", "job_id", "overflowed")

    def __init__(self, job_id: str, size: int = SUBSCRIPTION_BUFFER) -> None:
        self.job_id = job_id
        self._size = size
        self._items: list[JobEvent | _Resync] = []
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def deliver(self, item: JobEvent | _Resync) -> None:
        if len(self._items) >= self._size:
            self.overflowed = True
            return
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout_s: float) -> JobEvent | _Resync:
        """The next live event, or RESYNC when none came in time."""
        if self.overflowed:
            raise SlowSubscriber(f"fell {self._size} events behind on job {self.job_id}")
        if not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a
            # cancel that arrives as the item does, and the follower's task then
            # outlives the cancel meant to end it.
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError:
                return RESYNC
            finally:
                self._waiter = None
        return self._items.pop(0)


class EventLog:
    """Each job's logged events, and the control channel that carries cancels."""

    def __init__(
        self, client: redis.Redis, keys: Keys, jobs: JobRecords, settings: Settings
    ) -> None:
        self._redis = client
        self._keys = keys
        self._jobs = jobs
        self._settings = settings

    @backend_errors
    async def current(self, job_id: str, owner: str | None = None) -> JobEvent:
        """The job's current state as an event, with the `seq` of its last change;
        `JobNotFound` as `JobRecords.get` says."""
        return event_from_fields(await self._jobs.fields(job_id, owner))

    @backend_errors
    async def read(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """The job's logged events with a `seq` above `after`, oldest first."""
        entries: Any = await self._redis.xrange(self._keys.events(job_id), min=f"({after}-0")
        return [event_from_fields(json.loads(fields[b"job"])) for _, fields in entries]

    async def control_messages(self, subscribed: asyncio.Event) -> AsyncIterator[str]:
        """Job ids published on the control channel (cancels of running jobs);
        `subscribed` is set once none can be missed any more."""
        # A connection of its own, without the pool's read timeout. On a
        # cluster, to any node: a plain PUBLISH reaches every node.
        if isinstance(self._redis, RedisCluster):
            try:
                await self._redis.initialize()
            except (RedisError, RedisClusterException, OSError) as exc:
                raise BackendUnavailable("Redis Cluster is unavailable") from exc
            node = self._redis.get_random_node()
            client = node_client(self._settings, node.host, node.port)
        else:
            client = connect_listener(self._settings)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self._keys.control_channel)
                if subscribed.is_set():
                    # An earlier subscription set it: this one replaces a lost one.
                    metrics.redis_reconnects("control").inc()
                subscribed.set()
                async for data in messages(pubsub):
                    yield text(data)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        finally:
            await client.aclose()


class EventHub:
    """Routes the events channel to this process's subscriptions, by job id."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis = client
        self._keys = keys
        self._settings = settings
        self._subscriptions: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[EventHub]:
        """A hub listening on its own connection until exit (on a cluster, one to
        each master, found through a cluster client kept for the layout)."""
        client = connect(settings, 2) if settings.redis_cluster else connect_listener(settings)
        hub = cls(client, Keys(settings.namespace, cluster=settings.redis_cluster), settings)
        hub._reader = asyncio.create_task(hub._listen(), name="factq-event-hub")
        try:
            await asyncio.wait_for(hub._connected.wait(), 10)
            yield hub
        finally:
            await cancel_and_wait({hub._reader})
            await client.aclose()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Receive the job's live events while inside the block."""
        subscription = Subscription(job_id)
        self._subscriptions[job_id].add(subscription)
        try:
            yield subscription
        finally:
            subs = self._subscriptions.get(job_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscriptions[job_id]

    async def _listen(self) -> None:
        while True:
            try:
                if isinstance(self._redis, RedisCluster):
                    await self._listen_to_shards(self._redis)
                else:
                    async with self._redis.pubsub() as pubsub:
                        await pubsub.subscribe(*self._keys.events_channels)
                        self._subscribed()
                        await self._pump(pubsub)
            except* (RedisError, RedisClusterException, OSError, TimeoutError) as group:
                names = sorted({type(exc).__name__ for exc in group.exceptions})
                logger.warning("event hub lost Redis (%s); reconnecting", ", ".join(names))
                await asyncio.sleep(RECONNECT_DELAY_S)

    def _subscribed(self) -> None:
        if self._connected.is_set():
            metrics.redis_reconnects("events").inc()  # a lost connection replaced
        self._connected.set()
        # Anything published while we were away is only in the streams.
        self._broadcast(RESYNC)

    async def _listen_to_shards(self, cluster: RedisCluster) -> None:
        """Each shard's channel, on its master now; returns (raises) when any
        connection fails or a channel's slot moves."""
        await cluster.initialize()  # once: until then, closing the client closes nothing
        await cluster.nodes_manager.initialize()  # the layout now, after a failover
        by_master: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
        for channel in self._keys.events_channels:
            node = cluster.get_node_from_key(channel)
            if node is None:
                raise RedisConnectionError(f"no master holds the slot of {channel}")
            by_master[node.host, int(node.port)].append(channel)
        clients = [node_client(self._settings, *master) for master in by_master]
        pubsubs = [client.pubsub() for client in clients]
        try:
            for pubsub, channels in zip(pubsubs, by_master.values(), strict=True):
                for channel in channels:  # one command may name one slot's channels only
                    await pubsub.ssubscribe(channel)
            self._subscribed()
            async with asyncio.TaskGroup() as pumps:
                for pubsub in pubsubs:
                    pumps.create_task(self._pump(pubsub))
        finally:
            # A pubsub holds a connection of its own, apart from its client's pool.
            await asyncio.gather(*(pubsub.aclose() for pubsub in pubsubs))  # type: ignore[no-untyped-call]
            await asyncio.gather(*(client.aclose() for client in clients))

    async def _pump(self, pubsub: PubSub) -> None:
        async for data in messages(pubsub):
            self._route_safely(data)

    def _route_safely(self, data: bytes) -> None:
        try:
            self._route(data)
        except Exception:
            # One bad message must not stop every subscriber's events; those
            # of its job (or all, when it names none) read their streams.
            logger.exception("an event could not be routed; its followers resync")
            subs = self._subscriptions.get(_job_id_of(data))
            if subs is None:
                self._broadcast(RESYNC)
            else:
                for subscription in list(subs):
                    subscription.deliver(RESYNC)

    def _route(self, data: bytes) -> None:
        if not data.startswith(_PREFIX):
            return
        subs = self._subscriptions.get(_job_id_of(data))
        if not subs:
            return
        message = json.loads(data)
        event = event_from_fields({**message["job"], "seq": str(message["seq"])})
        for subscription in list(subs):
            subscription.deliver(event)

    def _broadcast(self, item: _Resync) -> None:
        for subs in self._subscriptions.values():
            for subscription in subs:
                subscription.deliver(item)


async def messages(pubsub: PubSub) -> AsyncIterator[bytes]:
    """The subscription's messages, until its connection fails (RedisError) or
    stops answering pings (TimeoutError): a quiet channel is pinged after
    HUB_LIVENESS_S, and must answer within as long again."""
    pinged = False
    while True:
        message = await pubsub.get_message(timeout=HUB_LIVENESS_S)
        if message is None:
            if pinged:
                raise TimeoutError(f"no answer to a ping in {HUB_LIVENESS_S:g} s")
            await pubsub.ping()
            pinged = True
            continue
        pinged = False
        if message["type"] in ("message", "smessage"):
            yield message["data"]
        elif message["type"] == "sunsubscribe":
            # Redis unsubscribes a shard channel whose slot left this node.
            raise RedisConnectionError("a shard channel's slot moved to another node")


def _job_id_of(data: bytes) -> str:
    return data[len(_PREFIX) : _ID_END].decode("ascii", "replace")


async def follow(
    log: EventLog, hub: EventHub, job_id: str, owner: str, *, after: int | None = None
) -> AsyncIterator[JobEvent]:
    """The job's events: its current state (or those after `after`), then each change.

    Ends after the terminal event. Raises `JobNotFound` before the first event
    for an unknown job or another owner's.
    """
    # Subscribe before reading the job: an event published in between would
    # otherwise be lost.
    with hub.subscribe(job_id) as subscription:
        backlog = await _first_events(log, job_id, owner, after)
        if backlog is None:
            return
        last = after or 0
        while True:
            # Each event is dropped once sent: an idle follower (thousands wait
            # at once) holds no event, only the seq of the last one it sent.
            while backlog:
                event = backlog.pop(0)
                if event.seq <= last:
                    continue
                last = event.seq
                ended = event.job.status.is_terminal
                yield event
                del event
                if ended:
                    return
            item = await subscription.next(RESYNC_AFTER_S)
            if isinstance(item, JobEvent) and item.seq <= last + 1:
                backlog = [item]
            else:
                # A gap, a reconnect of the hub, or a quiet spell: the stream knows.
                backlog = await log.read(job_id, last)
                if not backlog and _has_ended(await log.current(job_id, owner), last):
                    return
            del item


async def _first_events(
    log: EventLog, job_id: str, owner: str, after: int | None
) -> list[JobEvent] | None:
    """What a new follower sends first: the job's current state, or its logged
    events after `after`; None when the job has ended and all was sent."""
    current = await log.current(job_id, owner)
    if after is None:
        return [current]
    backlog = await log.read(job_id, after) if after < current.seq else []
    if not backlog and _has_ended(current, after):
        return None
    return backlog


def _has_ended(current: JobEvent, last_sent: int) -> bool:
    """The job is final and the follower has seen its last event already."""
    return current.job.status.is_terminal and last_sent >= current.seq
