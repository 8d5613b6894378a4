"""The jobs queue on the real RabbitMQ: declared once with every argument; the
connection restored soon after an outage."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from factq.broker import RECONNECT_INTERVAL_S, Broker, JobMessage
from factq.errors import BackendUnavailable, BrokerConfigError, QueueFull
from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import queue_depth
from tests.support.waiting import until, until_true


async def test_published_jobs_are_persistent_and_named(broker: Broker, settings: Settings) -> None:
    message = JobMessage(job_id="ab" * 16, task="factorial", input={"n": 5})
    await broker.publish_jobs([message])
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(broker.names.task_queue("factorial"), passive=True)
        got = await queue.get(timeout=5)
        assert got is not None
        await got.ack()
    assert got.message_id == message.job_id
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(got.body) == {
        "job_id": "ab" * 16,
        "task": "factorial",
        "input": {"n": 5},
        "request_id": None,
    }


def test_a_message_from_before_request_ids_is_still_read() -> None:
    old = b'{"job_id": "abababababababababababababababab", "task": "factorial", "input": {"n": 5}}'
    message = JobMessage.model_validate_json(old)
    assert message.request_id is None and message.input == {"n": 5}


async def test_queue_stats(broker: Broker) -> None:
    await broker.publish_jobs(
        [JobMessage(job_id=f"{i:032x}", task="factorial", input={"n": i}) for i in range(3)]
    )
    stats = await broker.queue_stats("factorial")
    assert stats.depth == 3
    assert stats.consumers == 0


async def test_a_full_queue_refuses_the_publish(settings_factory) -> None:
    settings = settings_factory(queue_max_length=2)
    async with Broker.open(settings, tasks=["t"]) as broker:
        jobs = [JobMessage(job_id=f"{i:032x}", task="t", input={}) for i in range(2)]
        await broker.publish_jobs(jobs)
        # A quorum queue applies its length limit a step behind the
        # publishes it is confirming, so it may take one more message.
        with pytest.raises(QueueFull):
            for i in range(3):
                await broker.publish_jobs([JobMessage(job_id=f"f{i:031x}", task="t", input={})])
        assert 2 <= await queue_depth(settings, "t") <= 3


async def test_changed_queue_arguments_are_a_clear_startup_error(settings_factory) -> None:
    settings = settings_factory(max_attempts=5)
    async with Broker.open(settings, tasks=["t"]):
        pass
    changed = settings.model_copy(update={"max_attempts": 3})
    with pytest.raises(BrokerConfigError, match="FACTQ_NAMESPACE"):
        async with Broker.open(changed, tasks=["t"]):
            pass


async def test_a_dead_broker_is_unavailable() -> None:
    settings = make_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(BackendUnavailable):
        async with Broker.open(settings, tasks=["t"]):
            pass


async def test_the_delivery_limit_dead_letters_after_max_attempts(settings_factory) -> None:
    settings = settings_factory(max_attempts=3)
    async with Broker.open(settings, tasks=["t"]) as broker:
        await broker.publish_jobs([JobMessage(job_id="c" * 32, task="t", input={})])
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(broker.names.task_queue("t"), passive=True)
            deliveries = 0
            for _ in range(10):
                got = await queue.get(timeout=5, fail=False)
                if got is None:
                    break
                deliveries += 1
                await got.reject(requeue=True)
            dead = await channel.declare_queue(broker.names.dead_letter_queue, passive=True)
            letters: list[AbstractIncomingMessage] = []

            async def is_dead_lettered() -> bool:
                letter = await dead.get(timeout=5, fail=False)
                if letter is not None:
                    letters.append(letter)
                return bool(letters)

            # Dead-lettering is asynchronous: the letter arrives a little later.
            await until_true(is_dead_lettered)
    assert deliveries == 3
    assert [letter.message_id for letter in letters] == ["c" * 32]


@dataclass
class Relay:
    """A TCP relay to RabbitMQ that can cut its connections and refuse new ones:
    an outage as one client sees it, with the shared server left alone."""

    target: tuple[str, int]
    url: str = ""
    is_cut: bool = False
    refused_at: list[float] = field(default_factory=list)
    streams: set[asyncio.StreamWriter] = field(default_factory=set)

    async def handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.is_cut:
            self.refused_at.append(time.monotonic())
            client.transport.abort()
            return
        try:
            server_reader, server = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return
        self.streams |= {client, server}
        await asyncio.gather(pipe(client_reader, server), pipe(server_reader, client))
        self.streams -= {client, server}

    def cut(self) -> None:
        self.is_cut = True
        for stream in list(self.streams):
            stream.transport.abort()

    def restore(self) -> None:
        self.is_cut = False


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # Either side closing ends both directions.
    writer.transport.abort()


@asynccontextmanager
async def relaying(settings: Settings) -> AsyncIterator[Relay]:
    parts = urlsplit(settings.amqp_url.get_secret_value())
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5672))
    server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}127.0.0.1:{server.sockets[0].getsockname()[1]}"
    relay.url = parts._replace(netloc=netloc).geturl()
    try:
        yield relay
    finally:
        server.close()
        relay.cut()
        await asyncio.wait_for(server.wait_closed(), 10)


async def answers(broker: Broker) -> bool:
    """Whether the broker answers now; its channels come back just after its connection."""
    try:
        await asyncio.wait_for(broker.queue_stats("t"), 1)
    except (BackendUnavailable, TimeoutError):
        return False
    return True


async def test_a_lost_connection_is_retried_each_interval_and_restored_promptly(
    settings: Settings,
) -> None:
    async with relaying(settings) as relay:
        relayed = make_settings(namespace=settings.namespace, amqp_url=relay.url)
        async with Broker.open(relayed, tasks=["t"], name="factq-test-reconnect") as broker:
            await broker.queue_stats("t")
            relay.cut()
            # Two attempts refused in a row: the time between is the interval.
            await until(lambda: len(relay.refused_at) >= 2, timeout_s=15)
            relay.restore()
            back = time.monotonic()
            await until_true(lambda: answers(broker), timeout_s=15)
            restored_after = time.monotonic() - back
    assert relay.refused_at[1] - relay.refused_at[0] < RECONNECT_INTERVAL_S + 0.5
    assert restored_after < RECONNECT_INTERVAL_S + 1.0


async def test_several_nodes_are_tried_in_turn_to_connect_and_to_reconnect(
    settings: Settings,
) -> None:
    """FACTQ_AMQP_URL with one URL per node of a cluster: a node that refuses is
    passed over, at the start and when the node in use goes away."""
    async with relaying(settings) as first, relaying(settings) as second:
        first.cut()
        nodes = make_settings(namespace=settings.namespace, amqp_url=f"{first.url},{second.url}")
        async with Broker.open(nodes, tasks=["t"], name="factq-test-nodes") as broker:
            assert len(first.refused_at) == 1  # tried first, refused: the second serves
            await broker.queue_stats("t")
            first.restore()
            second.cut()
            await until(lambda: len(first.streams) > 0, timeout_s=15)
            await until_true(lambda: answers(broker), timeout_s=15)
            assert not second.streams
