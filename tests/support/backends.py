"""Per-test namespaces on the real local Redis and RabbitMQ, and their cleanup."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator

import aio_pika
import redis.asyncio as redis
from aio_pika.exceptions import AMQPError
from limits import parse

from factq.api.auth import ANONYMOUS, owner_of
from factq.broker import QueueNames
from factq.settings import Settings
from factq.state.computations import input_digest
from factq.state.connection import text
from factq.state.keys import Keys
from factq.tasks import TaskRegistry

# Owners the tests that use the store directly name.
TEST_OWNERS = ("alice", "bob", "someone-else")
# Where the tests' requests come from: httpx's ASGI transport, and loopback.
TEST_CLIENT_HOSTS = ("127.0.0.1", "::1")


async def delete_namespace(settings: Settings, job_ids: Iterable[str] = ()) -> None:
    """Delete the namespace's Redis keys and its RabbitMQ queues and exchange."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        keys = await namespace_keys(client, settings, job_ids)
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()
    await delete_queues(settings)


async def namespace_keys(
    client: redis.Redis, settings: Settings, job_ids: Iterable[str] = ()
) -> list[str]:
    """Every Redis key the namespace may hold, found from its roots rather than by
    walking the keyspace (SCAN with a pattern still visits every key of a server
    that other programs share): the owners its settings allow, each owner's job
    index, and each job's own keys; `job_ids` adds jobs made without the index."""
    names = Keys(settings.namespace)
    registry = TaskRegistry.from_settings(settings)
    owners = [ANONYMOUS, *TEST_OWNERS, *(owner_of(key) for key in settings.api_key_list)]
    keys = set(names.webhook_streams)
    for owner in owners:
        keys |= {names.owner_jobs(owner), names.owner_active(owner), names.owner_counter(owner)}
    keys |= set(_limiter_keys(settings, [owner_of(key) for key in settings.api_key_list]))
    async with client.pipeline(transaction=False) as pipe:
        for owner in owners:
            pipe.zrange(names.owner_jobs(owner), 0, -1)
            pipe.smembers(names.owner_active(owner))
        indexed = await pipe.execute()
    every_job = set(job_ids) | {text(job_id) for members in indexed for job_id in members}
    jobs = sorted(every_job)
    async with client.pipeline(transaction=False) as pipe:
        for job_id in jobs:
            pipe.hmget(names.job(job_id), "task", "input", "idempotency_key")
        fields = await pipe.execute()
    for job_id, (task_name, job_input, idempotency_key) in zip(jobs, fields, strict=True):
        keys |= {names.job(job_id), names.events(job_id)}
        task = registry.get(text(task_name)) if task_name else None
        formats = task.formats if task else [f for t in registry.values() for f in t.formats]
        keys |= {names.result(job_id, fmt.name) for fmt in formats}
        if idempotency_key:
            keys.add(text(idempotency_key))
        if task is not None and task.deterministic and job_input:
            digest = input_digest(task.name, json.loads(job_input), task.version)
            keys |= {names.cached(task.name, digest), names.computing(task.name, digest)}
    return sorted(keys)


def _limiter_keys(settings: Settings, owners: Iterable[str]) -> Iterator[str]:
    """The rate limiter's counters (see factq.api.ratelimit) for these owners, and for
    the addresses tests connect from when keys are off."""
    if not settings.rate_limit:
        return
    item = parse(settings.rate_limit)
    callers = list(owners) or [f"address:{host}" for host in TEST_CLIENT_HOSTS]
    for caller in callers:
        yield f"{settings.namespace}:limits:{item.key_for(caller)}"


async def delete_queues(settings: Settings) -> None:
    """Delete the namespace's RabbitMQ queues and exchange (its Redis keys stay)."""
    names = QueueNames(settings.namespace)
    task_queues = [names.task_queue(task) for task in TaskRegistry.from_settings(settings)]
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        # A failed delete closes its channel, so each gets a fresh one.
        for queue in (*task_queues, names.dead_letter_queue):
            channel = await connection.channel()
            with contextlib.suppress(AMQPError):
                await channel.queue_delete(queue)
        channel = await connection.channel()
        with contextlib.suppress(AMQPError):
            await channel.exchange_delete(names.dead_letter_exchange)


async def queue_depth(settings: Settings, task: str | None = None) -> int:
    """Messages ready in one task's queue, or in every task's together."""
    names = QueueNames(settings.namespace)
    tasks = [task] if task is not None else list(TaskRegistry.from_settings(settings))
    depth = 0
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        for each in tasks:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(names.task_queue(each), passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue  # never declared: nothing in it
            depth += queue.declaration_result.message_count or 0
    return depth


async def queue_consumers(settings: Settings, queue_name: str) -> int:
    """Consumers on one of the namespace's queues."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.consumer_count or 0
