"""The cluster harness does what it says, checked with the clients factq uses."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from tests.support.clusters import RabbitCluster
from tests.support.clusters import RedisCluster as RedisClusterHandle
from tests.support.waiting import until_true

# The first test of each cluster pays for its start (see conftest).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


async def keys_on_every_master(cluster: RedisClusterHandle, prefix: str) -> dict[int, str]:
    """One key per master: {master port: key}."""
    masters = set(await cluster.masters())
    keys: dict[int, str] = {}
    index = 0
    while set(keys) != masters:
        key = f"{prefix}:{index}"
        keys.setdefault(await cluster.master_of(key), key)
        index += 1
    return keys


async def test_redis_cluster_sets_and_gets_on_every_master(
    redis_cluster: RedisClusterHandle,
) -> None:
    assert len(await redis_cluster.masters()) == 3
    keys = await keys_on_every_master(redis_cluster, f"harness-{uuid4().hex[:8]}")
    async with RedisCluster.from_url(redis_cluster.url) as client:
        for port, key in keys.items():
            await client.set(key, str(port), ex=600)
        for port, key in keys.items():
            assert await client.get(key) == str(port).encode()


async def test_keys_replicated_before_a_master_dies_survive_its_failover(
    redis_cluster: RedisClusterHandle,
) -> None:
    keys = await keys_on_every_master(redis_cluster, f"harness-{uuid4().hex[:8]}")
    victim = min(keys)
    for port, key in keys.items():
        # On the master's own connection, so that WAIT covers this write.
        async with redis.Redis(port=port) as master:
            await master.set(key, f"value-{port}", ex=600)
            assert await master.wait(1, 5000) == 1

    started = time.monotonic()
    redis_cluster.kill_master(victim)
    promoted = await redis_cluster.wait_for_failover(victim, timeout_s=30)
    print(f"\nRedis failover: {victim} killed, {promoted} master in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip

    assert promoted != victim
    assert victim not in await redis_cluster.masters()
    assert await redis_cluster.master_of(keys[victim]) == promoted
    async with RedisCluster.from_url(redis_cluster.url) as client:
        for port, key in keys.items():
            assert await client.get(key) == f"value-{port}".encode()

    started = time.monotonic()
    await redis_cluster.restart(victim)
    print(f"Redis: {victim} back as a replica in {time.monotonic() - started:.1f} s")
    assert len(await redis_cluster.masters()) == 3


async def test_rabbit_cluster_runs_three_nodes(rabbit_cluster: RabbitCluster) -> None:
    assert await rabbit_cluster.running_nodes() == sorted(rabbit_cluster.names)
    for url in rabbit_cluster.urls:
        connection = await aio_pika.connect(url)
        await connection.close()


async def test_a_quorum_queue_elects_a_new_leader_when_its_node_stops(
    rabbit_cluster: RabbitCluster,
) -> None:
    queue_name = f"harness-{uuid4().hex[:8]}"
    arguments: dict[str, Any] = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}
    connection = await aio_pika.connect(rabbit_cluster.urls[0])
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue_name, durable=True, arguments=arguments)
    assert await rabbit_cluster.queue_members(queue_name) == sorted(rabbit_cluster.names)
    leader = await rabbit_cluster.queue_leader(queue_name)
    assert leader in rabbit_cluster.names

    started = time.monotonic()
    rabbit_cluster.stop_node(leader)

    async def has_new_leader() -> bool:
        return await rabbit_cluster.queue_leader(queue_name) not in (None, leader)

    await until_true(has_new_leader, timeout_s=30)
    new_leader = await rabbit_cluster.queue_leader(queue_name)
    print(f"\nRabbitMQ: {leader} killed, {new_leader} leads {queue_name} in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip

    assert new_leader is not None
    connection = await aio_pika.connect(rabbit_cluster.url_of(new_leader))
    async with connection:
        channel = await connection.channel()  # publisher confirms: publish waits for the ack
        queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
        await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue_name)
        message = await queue.get(timeout=10)
        assert message.body == b"after"
        await message.ack()

        started = time.monotonic()
        await rabbit_cluster.start_node(leader)
        print(f"RabbitMQ: {leader} back in {time.monotonic() - started:.1f} s")
        assert await rabbit_cluster.running_nodes() == sorted(rabbit_cluster.names)
        await queue.delete(if_unused=False, if_empty=False)
