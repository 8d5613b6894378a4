"""The jobs queue on the real RabbitMQ: declared once with every argument."""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from factq.broker import Broker, JobMessage
from factq.errors import BackendUnavailable, BrokerConfigError, QueueFull
from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import queue_depth


async def test_published_jobs_are_persistent_and_named(broker: Broker, settings: Settings) -> None:
    message = JobMessage(job_id="ab" * 16, task="factorial", input={"n": 5})
    await broker.publish_jobs([message])
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(broker.names.jobs_queue, passive=True)
        got = await queue.get(timeout=5)
        assert got is not None
        await got.ack()
    assert got.message_id == message.job_id
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(got.body) == {"job_id": "ab" * 16, "task": "factorial", "input": {"n": 5}}


async def test_queue_stats(broker: Broker) -> None:
    await broker.publish_jobs(
        [JobMessage(job_id=f"{i:032x}", task="factorial", input={"n": i}) for i in range(3)]
    )
    stats = await broker.queue_stats()
    assert stats.depth == 3
    assert stats.consumers == 0


async def test_a_full_queue_refuses_the_publish(settings_factory) -> None:
    settings = settings_factory(queue_max_length=2)
    async with Broker.open(settings) as broker:
        jobs = [JobMessage(job_id=f"{i:032x}", task="t", input={}) for i in range(2)]
        await broker.publish_jobs(jobs)
        # A quorum queue applies its length limit a step behind the
        # publishes it is confirming, so it may take one more message.
        with pytest.raises(QueueFull):
            for i in range(3):
                await broker.publish_jobs([JobMessage(job_id=f"f{i:031x}", task="t", input={})])
        assert 2 <= await queue_depth(settings) <= 3


async def test_changed_queue_arguments_are_a_clear_startup_error(settings_factory) -> None:
    settings = settings_factory(max_attempts=5)
    async with Broker.open(settings):
        pass
    changed = settings.model_copy(update={"max_attempts": 3})
    with pytest.raises(BrokerConfigError, match="FACTQ_NAMESPACE"):
        async with Broker.open(changed):
            pass


async def test_a_dead_broker_is_unavailable() -> None:
    settings = make_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(BackendUnavailable):
        async with Broker.open(settings):
            pass


async def test_the_delivery_limit_dead_letters_after_max_attempts(settings_factory) -> None:
    settings = settings_factory(max_attempts=3)
    async with Broker.open(settings) as broker:
        await broker.publish_jobs([JobMessage(job_id="c" * 32, task="t", input={})])
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.names.jobs_queue, passive=True)
            deliveries = 0
            for _ in range(10):
                got = await queue.get(timeout=5, fail=False)
                if got is None:
                    break
                deliveries += 1
                await got.reject(requeue=True)
            dead = await channel.declare_queue(broker.names.dead_letter_queue, passive=True)
            for _ in range(50):
                letter = await dead.get(timeout=5, fail=False)
                if letter is not None:
                    break
                await asyncio.sleep(0.1)
    assert deliveries == 3
    assert letter is not None and letter.message_id == "c" * 32
