"""Webhook deliveries waiting to be sent: a Redis stream per shard of jobs
(see `factq.state.keys`), each read by one consumer group.

The state-change scripts append to a job's shard's stream in the same step
as the change; the workers read them together, so each delivery goes to one
worker, and one left unfinished by a worker that died is taken over by
another.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from factq.schema import Job, WebhookDelivery
from factq.state.connection import backend_errors, text
from factq.state.keys import Keys
from factq.state.records import job_from_fields

GROUP = "senders"
# On a cluster the streams live in several slots, and no one command waits on
# them all: they are read this often while none has a delivery.
CLUSTER_POLL_MS: Final = 100


@dataclass(frozen=True, slots=True)
class WebhookTask:
    """One event to deliver to a job's webhook."""

    stream: str
    entry_id: str
    job_id: str
    type: str
    seq: int
    job: Job
    # The webhook's full URL: the job shows it redacted.
    url: str

    @classmethod
    def from_entry(
        cls, stream: bytes | str, entry_id: bytes | str, fields: dict[bytes, bytes]
    ) -> WebhookTask:
        job = job_from_fields(json.loads(fields[b"job"]))
        shown = job.webhook.url if job.webhook else ""
        return cls(
            stream=text(stream),
            entry_id=text(entry_id),
            job_id=text(fields[b"job_id"]),
            type=text(fields[b"type"]),
            seq=int(fields[b"seq"]),
            job=job,
            url=text(fields.get(b"url") or shown),
        )


class WebhookQueue:
    """The deliveries stream, and each job's log of attempts."""

    def __init__(self, client: redis.Redis, keys: Keys, log_script: AsyncScript) -> None:
        self._redis = client
        self._keys = keys
        self._log_script = log_script

    @backend_errors
    async def ensure_group(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in self._keys.webhook_streams:
                pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                raise reply

    @backend_errors
    async def next(
        self, consumer: str, *, count: int, block_ms: int, min_idle_ms: int
    ) -> list[WebhookTask]:
        """Deliveries for this consumer: those another consumer left unfinished
        for min_idle_ms (it died), else new ones, waiting up to block_ms."""
        streams = self._keys.webhook_streams
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xautoclaim(stream, GROUP, consumer, min_idle_ms, count=count)
            claims: Any = await pipe.execute()
        tasks = [
            WebhookTask.from_entry(stream, entry_id, fields)
            for stream, (_, claimed, _) in zip(streams, claims, strict=True)
            for entry_id, fields in claimed
            if fields
        ]
        if tasks:
            return tasks
        if not self._keys.cluster:
            found: Any = await self._redis.xreadgroup(
                GROUP, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
            )
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
                found = [reply for replies in await pipe.execute() for reply in replies or []]
            if not found:
                await asyncio.sleep(min(block_ms, CLUSTER_POLL_MS) / 1000)
        return [
            WebhookTask.from_entry(stream, entry_id, fields)
            for stream, entries in found or []
            for entry_id, fields in entries
            if fields
        ]

    @backend_errors
    async def finish(self, task: WebhookTask) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(task.stream, GROUP, task.entry_id)
            pipe.xdel(task.stream, task.entry_id)
            await pipe.execute()

    @backend_errors
    async def log_attempt(self, job_id: str, attempt: WebhookDelivery) -> None:
        """Record an attempt in the job's `webhook.deliveries` (a job that is gone stays gone)."""
        await self._log_script(keys=[self._keys.job(job_id)], args=[attempt.model_dump_json()])
