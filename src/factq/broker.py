"""Publishing and consuming jobs on RabbitMQ (aio-pika).

One robust connection per process. Each task has its own jobs queue, so that a
worker takes only the jobs of the tasks it serves (`factq worker --tasks`);
each is a quorum queue declared with every argument it will ever need, because
RabbitMQ refuses to change a queue's arguments later. aio-pika's errors become
factq's here, at the edge.

On a RabbitMQ cluster, FACTQ_AMQP_URL names several nodes: each connection
attempt, the first and every reconnection, tries them in turn from the one
last used, so that a process outlives the node it was connected to (the
quorum queues elect a leader among the nodes left).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from pydantic import BaseModel
from yarl import URL

from factq import metrics
from factq.errors import BackendUnavailable, BrokerConfigError, QueueFull
from factq.settings import Settings

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
# Seconds between attempts to reconnect, which go on forever once a connection
# is lost (aio-pika's default is 5): until one succeeds, the API answers 503
# however long RabbitMQ has been back.
RECONNECT_INTERVAL_S = 1.0

MessageHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]
Settlement = Literal["ack", "requeue"]


class JobMessage(BaseModel):
    """What a worker needs to run a job; the job's state lives in Redis."""

    job_id: str
    task: str
    input: dict[str, Any]
    # The X-Request-ID of the request that submitted the job, for the worker's
    # log lines; messages queued before it existed have none.
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Consumer:
    """A running consumer; `cancel` stops deliveries, held messages stay held."""

    queue: AbstractQueue
    tag: str

    async def cancel(self) -> None:
        try:
            await self.queue.cancel(self.tag)
        except (AMQPError, ChannelInvalidStateError, OSError) as exc:
            logger.warning("could not cancel consumer on %s: %s", self.queue.name, exc)


async def settle(message: AbstractIncomingMessage, settlement: Settlement) -> None:
    """Acknowledge a delivery, or give it back to the queue, unless its channel
    closed meanwhile (RabbitMQ restarted, the connection dropped).

    The broker has then taken the message back already and delivers it again, to
    this worker once its robust connection is restored, or to another: nothing is
    left to do, and nothing to raise. (aio-pika refuses to settle a delivery of a
    closed channel; the restored channel does not know its delivery tag.)
    """
    try:
        if settlement == "ack":
            await message.ack()
        else:
            await message.reject(requeue=True)
    except (AMQPError, ChannelInvalidStateError, OSError) as exc:
        logger.warning(
            "message %s not settled (%s); RabbitMQ delivers it again",
            message.message_id,
            type(exc).__name__,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    consumers: int


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The RabbitMQ queues and exchange of one deployment, from `FACTQ_NAMESPACE`."""

    namespace: str

    def task_queue(self, task: str) -> str:
        """The queue of one task's jobs."""
        return f"{self.namespace}.jobs.{task}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.jobs.dead"


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection to whichever of several nodes answers: each attempt
    tries the nodes in turn, from the one that answered last."""

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        self._urls = [URL(url) for url in urls]
        self._current = 0
        super().__init__(self._urls[0], **kwargs)

    async def _RobustConnection__connect_transport(self) -> None:
        # Each connection attempt of aio-pika's RobustConnection, the first and
        # every reconnection, comes here; it connects to `self.url`.
        for _ in self._urls:
            self.url = self._urls[self._current]
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
                return
            except (AMQPConnectionError, OSError, TimeoutError):
                if len(self._urls) == 1:
                    raise
                logger.warning("RabbitMQ node %s does not answer; trying the next", self.url.host)
                self._current = (self._current + 1) % len(self._urls)
        raise AMQPConnectionError("no RabbitMQ node answered")


async def connect(settings: Settings, name: str) -> AbstractRobustConnection:
    """A robust connection to RabbitMQ (to one of its nodes, given several URLs)."""
    connection = FailoverConnection(
        settings.amqp_urls,
        client_properties={"connection_name": name},
        reconnect_interval=RECONNECT_INTERVAL_S,
    )
    await connection.connect(timeout=10)
    return connection


def _count_reconnect(connection: AbstractRobustConnection | None, /) -> None:
    """aio-pika calls this each time the robust connection is restored."""
    metrics.RABBITMQ_RECONNECTS.inc()


def jobs_queue_arguments(settings: Settings) -> dict[str, Any]:
    """The jobs queue's arguments; changing any needs a new namespace or queue."""
    names = QueueNames(settings.namespace)
    replicas = _replicas(settings)
    return {
        **replicas,
        "x-queue-type": "quorum",
        # RabbitMQ 3.10 dead-letters a message returned more than this many
        # times, counting the first delivery out: max_attempts deliveries in all.
        "x-delivery-limit": settings.max_attempts - 1,
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",
        # at-least-once dead-lettering requires reject-publish overflow.
        "x-overflow": "reject-publish",
        "x-max-length": settings.queue_max_length,
    }


def _replicas(settings: Settings) -> dict[str, Any]:
    """How many nodes hold a quorum queue, when a setting says (else RabbitMQ's default)."""
    if settings.quorum_initial_group_size:
        return {"x-quorum-initial-group-size": settings.quorum_initial_group_size}
    return {}


class Broker:
    """The tasks' jobs queues and their dead-letter queue, over one robust connection."""

    def __init__(
        self, connection: AbstractRobustConnection, settings: Settings, tasks: Sequence[str]
    ) -> None:
        self._connection = connection
        self._settings = settings
        self.tasks = tuple(tasks)
        self.names = QueueNames(settings.namespace)
        self._publish_channel: AbstractRobustChannel | None = None
        self._admin_channel: AbstractRobustChannel | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, tasks: Sequence[str], name: str = "factq"
    ) -> AsyncIterator[Broker]:
        """Connect (failing fast if RabbitMQ is down), declare the queues of these
        tasks and the dead-letter queue, close on exit."""
        try:
            connection = await connect(settings, name)
        except (TimeoutError, AMQPError, OSError) as exc:
            raise BackendUnavailable(f"RabbitMQ is unavailable: {type(exc).__name__}") from exc
        connection.reconnect_callbacks.add(_count_reconnect)
        broker = cls(connection, settings, tasks)
        try:
            await broker._declare()
            yield broker
        finally:
            await connection.close()

    async def _declare(self) -> None:
        self._publish_channel = await self._channel(on_return_raises=True)
        self._admin_channel = await self._channel()
        channel = self._admin_channel
        try:
            dlx = await channel.declare_exchange(
                self.names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
            dead = await channel.declare_queue(
                self.names.dead_letter_queue,
                durable=True,
                arguments={"x-queue-type": "quorum", **_replicas(self._settings)},
            )
            await dead.bind(dlx)
        except ChannelPreconditionFailed as exc:
            raise BrokerConfigError(f"RabbitMQ refused the dead-letter queue: {exc}") from None
        arguments = jobs_queue_arguments(self._settings)
        for task in self.tasks:
            queue_name = self.names.task_queue(task)
            try:
                await channel.declare_queue(queue_name, durable=True, arguments=arguments)
            except ChannelPreconditionFailed as exc:
                raise BrokerConfigError(
                    f"RabbitMQ already has queue {queue_name!r} with other arguments "
                    f"({exc}). A changed FACTQ_MAX_ATTEMPTS, FACTQ_QUEUE_MAX_LENGTH or "
                    "FACTQ_QUORUM_INITIAL_GROUP_SIZE needs a new FACTQ_NAMESPACE, or the old "
                    f"queues deleted once they are empty: rabbitmqctl delete_queue {queue_name} "
                    "(README: Changing queue arguments)"
                ) from None

    async def _channel(self, *, on_return_raises: bool = False) -> AbstractRobustChannel:
        channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=on_return_raises
        )
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def publish_jobs(self, messages: Sequence[JobMessage]) -> None:
        """Publish persistent, mandatory messages and wait for every broker confirm."""
        assert self._publish_channel is not None
        exchange = self._publish_channel.default_exchange

        async def publish(message: JobMessage) -> None:
            await exchange.publish(
                aio_pika.Message(
                    message.model_dump_json().encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.job_id,
                ),
                routing_key=self.names.task_queue(message.task),
                mandatory=True,
                timeout=PUBLISH_TIMEOUT_S,
            )

        try:
            await asyncio.gather(*(publish(message) for message in messages))
        except PublishError as exc:
            # Unroutable: the queue was deleted under us. Nothing was queued.
            raise BackendUnavailable(
                "a jobs queue does not exist; restart a worker or the API to declare it"
            ) from exc
        except DeliveryError as exc:
            # A nack: with reject-publish overflow, the queue is at its maximum length.
            raise QueueFull("the job queue is full; try again later") from exc
        except (TimeoutError, AMQPError, ChannelInvalidStateError, OSError) as exc:
            raise BackendUnavailable("RabbitMQ is unavailable") from exc

    async def queue_stats(self, task: str) -> QueueStats:
        """Messages waiting in a task's queue, and consumers on it."""
        assert self._admin_channel is not None
        try:
            # The raw channel: aio-pika's robust channel caches a declared
            # queue together with the counts of its first declaration.
            channel = await self._admin_channel.get_underlay_channel()
            result = await channel.queue_declare(self.names.task_queue(task), passive=True)
        except (TimeoutError, AMQPError, ChannelInvalidStateError, OSError) as exc:
            raise BackendUnavailable("RabbitMQ is unavailable") from exc
        return QueueStats(depth=result.message_count or 0, consumers=result.consumer_count or 0)

    async def all_queue_stats(self) -> dict[str, QueueStats]:
        """`queue_stats` of every task this broker declared, by task."""
        stats = await asyncio.gather(*(self.queue_stats(task) for task in self.tasks))
        return dict(zip(self.tasks, stats, strict=True))

    async def consume_jobs(self, task: str, handler: MessageHandler, *, prefetch: int) -> Consumer:
        """Deliver a task's jobs to handler, at most prefetch unacknowledged at once."""
        return await self._consume(self.names.task_queue(task), handler, prefetch)

    async def consume_dead_letters(self, handler: MessageHandler) -> Consumer:
        """Deliver jobs that reached the delivery limit."""
        return await self._consume(self.names.dead_letter_queue, handler, 1)

    async def _consume(self, queue_name: str, handler: MessageHandler, prefetch: int) -> Consumer:
        channel = await self._channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, passive=True)
        tag = await queue.consume(handler, no_ack=False)
        return Consumer(queue, tag)
