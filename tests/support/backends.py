"""Per-test namespaces on the real local Redis and RabbitMQ, and their cleanup."""

from __future__ import annotations

import contextlib

import aio_pika
import redis.asyncio as redis
from aio_pika.exceptions import AMQPError

from factq.names import Names
from factq.settings import Settings


async def delete_namespace(settings: Settings) -> None:
    """Delete every Redis key and RabbitMQ queue and exchange of the namespace."""
    names = Names(settings.namespace)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        keys = [key async for key in client.scan_iter(match=names.redis_pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()
    await delete_queues(settings)


async def delete_queues(settings: Settings) -> None:
    """Delete the namespace's RabbitMQ queues and exchange (its Redis keys stay)."""
    names = Names(settings.namespace)
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        # A failed delete closes its channel, so each gets a fresh one.
        for queue in (names.jobs_queue, names.dead_letter_queue):
            channel = await connection.channel()
            with contextlib.suppress(AMQPError):
                await channel.queue_delete(queue)
        channel = await connection.channel()
        with contextlib.suppress(AMQPError):
            await channel.exchange_delete(names.dead_letter_exchange)


async def queue_depth(settings: Settings) -> int:
    """Messages ready in the namespace's jobs queue."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(settings.namespace).jobs_queue, passive=True)
        return queue.declaration_result.message_count or 0


async def queue_consumers(settings: Settings, queue_name: str) -> int:
    """Consumers on one of the namespace's queues."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.consumer_count or 0
