"""Webhook deliveries waiting to be sent: a Redis stream read by one consumer group.

The state-change scripts append to it in the same step as the change; the
workers read it together, so each delivery goes to one worker, and one left
unfinished by a worker that died is taken over by another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from factq.schema import Job, WebhookDelivery
from factq.state.connection import backend_errors, text
from factq.state.keys import Keys
from factq.state.records import job_from_fields

GROUP = "senders"


@dataclass(frozen=True, slots=True)
class WebhookTask:
    """One event to deliver to a job's webhook."""

    entry_id: str
    job_id: str
    type: str
    seq: int
    job: Job
    # The webhook's full URL: the job shows it redacted.
    url: str

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> WebhookTask:
        job = job_from_fields(json.loads(fields[b"job"]))
        shown = job.webhook.url if job.webhook else ""
        return cls(
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
        try:
            await self._redis.xgroup_create(self._keys.webhooks, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @backend_errors
    async def next(
        self, consumer: str, *, count: int, block_ms: int, min_idle_ms: int
    ) -> list[WebhookTask]:
        """Deliveries for this consumer: those another consumer left unfinished
        for min_idle_ms (it died), else new ones, waiting up to block_ms."""
        _, claimed, _ = await self._redis.xautoclaim(
            self._keys.webhooks, GROUP, consumer, min_idle_ms, count=count
        )
        entries: Any = claimed
        if not entries:
            streams: Any = await self._redis.xreadgroup(
                GROUP, consumer, {self._keys.webhooks: ">"}, count=count, block=block_ms
            )
            entries = streams[0][1] if streams else []
        return [WebhookTask.from_entry(entry_id, fields) for entry_id, fields in entries if fields]

    @backend_errors
    async def finish(self, task: WebhookTask) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._keys.webhooks, GROUP, task.entry_id)
            pipe.xdel(self._keys.webhooks, task.entry_id)
            await pipe.execute()

    @backend_errors
    async def log_attempt(self, job_id: str, attempt: WebhookDelivery) -> None:
        """Record an attempt in the job's `webhook.deliveries` (a job that is gone stays gone)."""
        await self._log_script(keys=[self._keys.job(job_id)], args=[attempt.model_dump_json()])
