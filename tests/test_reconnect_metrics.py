"""The reconnect counters, against real outages: a private Redis killed and
started again, a RabbitMQ connection closed by the server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from factq.broker import Broker, JobMessage
from factq.errors import BackendUnavailable
from factq.settings import Settings
from factq.state.events import EventHub
from factq.state.store import Store
from factq.submit import new_job_id
from tests.support.redis_server import RedisServer
from tests.support.waiting import in_background, until

pytestmark = pytest.mark.timeout(60)


def counted(name: str, **labels: str) -> Callable[[], float]:
    """The current value of a series of this process (0 before its first count)."""
    return lambda: REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_lost_redis_counts_errors_then_each_listener_once_back(
    private_redis: RedisServer, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(redis_url=private_redis.url)
    errors = counted("factq_redis_connection_errors_total")
    events = counted("factq_redis_reconnects_total", connection="events")
    control = counted("factq_redis_reconnects_total", connection="control")
    before = errors(), events(), control()
    listening = asyncio.Event()
    async with Store.open(settings) as store, EventHub.open(settings) as hub:

        async def cancels() -> None:
            while True:
                try:
                    async for _ in store.events.control_messages(listening):
                        pass
                except BackendUnavailable:
                    await asyncio.sleep(0.1)

        async with in_background(cancels()):
            await asyncio.wait_for(listening.wait(), 10)
            await asyncio.to_thread(private_redis.kill)
            with pytest.raises(BackendUnavailable):
                await store.ping()
            assert errors() >= before[0] + 1
            await asyncio.to_thread(private_redis.start)
            await until(lambda: events() == before[1] + 1, timeout_s=20)
            await until(lambda: control() == before[2] + 1, timeout_s=20)
            await store.ping()
    assert hub.subscriber_count == 0


def connection_pid(name: str) -> str:
    """RabbitMQ's id of the client connection named `name` (only ours is touched)."""
    listed = rabbitmqctl("list_connections", "pid", "client_properties", "--silent")
    for line in listed.splitlines():
        pid, _, properties = line.partition("\t")
        if f'{{"connection_name","{name}"}}' in properties:
            return pid
    raise AssertionError(f"no RabbitMQ connection named {name}: {listed[:500]}")


def rabbitmqctl(*args: str) -> str:
    executable = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run(
        [executable, *args], check=True, capture_output=True, text=True, timeout=30
    )
    return done.stdout


async def test_a_rabbitmq_connection_restored_counts_once(settings: Settings) -> None:
    reconnects = counted("factq_rabbitmq_reconnects_total")
    before = reconnects()
    name = f"factq-test-{settings.namespace}"
    async with Broker.open(settings, tasks=["factorial"], name=name) as broker:
        pid = await asyncio.to_thread(connection_pid, name)
        await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "a test closes it")
        await until(lambda: reconnects() == before + 1, timeout_s=20)
        job = JobMessage(job_id=new_job_id(), task="factorial", input={"n": 1})
        await broker.publish_jobs([job])
        assert (await broker.queue_stats("factorial")).depth == 1
