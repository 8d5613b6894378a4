"""Sending webhook deliveries: signed, retried with backoff, each attempt logged.

The deliveries wait in a Redis stream, queued by the same script that made
the change; the workers read it as one consumer group, so each delivery is
sent by one worker, and one whose worker died is taken over by another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime

import httpx

from factq.errors import BackendUnavailable, InvalidWebhook
from factq.settings import Settings
from factq.store import Store
from factq.webhook_queue import WebhookTask
from factq.webhooks import WebhookDelivery, allowed_hosts, check_destination, signed_request

logger = logging.getLogger(__name__)

BATCH = 16
BLOCK_MS = 1000
# A delivery left unfinished this long by its worker is taken over by another.
TAKEOVER_MS = 5 * 60 * 1000
CONCURRENT_DELIVERIES = 32


class WebhookSender:
    """Reads the deliveries stream and sends each one until told to stop."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._allowed = allowed_hosts(settings.webhook_allowed_hosts)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._slots = asyncio.Semaphore(CONCURRENT_DELIVERIES)
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send deliveries until stop is set, then finish those begun."""
        secret = self._settings.webhook_secret.get_secret_value()
        if not secret:
            return
        # Redirects are never followed: a receiver could bounce a delivery
        # to an address the destination check refused.
        async with httpx.AsyncClient(
            follow_redirects=False, timeout=self._settings.webhook_timeout_s
        ) as http:
            while not stop.is_set():
                try:
                    await self._store.webhooks.ensure_group()
                    break
                except BackendUnavailable:
                    await asyncio.sleep(1)
            while not stop.is_set():
                try:
                    tasks = await self._store.webhooks.next(
                        self._consumer, count=BATCH, block_ms=BLOCK_MS, min_idle_ms=TAKEOVER_MS
                    )
                except BackendUnavailable:
                    await asyncio.sleep(1)
                    continue
                for task in tasks:
                    await self._slots.acquire()
                    sending = asyncio.create_task(self._deliver(http, secret, task, stop))
                    self._sending.add(sending)
                    sending.add_done_callback(self._sent)
            if self._sending:
                await asyncio.wait(self._sending, timeout=self._settings.webhook_timeout_s)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots.release()

    async def _deliver(
        self, http: httpx.AsyncClient, secret: str, task: WebhookTask, stop: asyncio.Event
    ) -> None:
        webhook = task.job.webhook
        if webhook is None:
            await self._store.webhooks.finish(task)
            return
        job = task.job.model_dump(mode="json", exclude={"webhook"})
        delivery_id = f"{task.job_id}-{task.seq}-{task.type}"
        attempts = self._settings.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            outcome = await self._attempt(http, secret, webhook.url, delivery_id, task.type, job)
            log = WebhookDelivery(type=task.type, attempt=attempt, at=datetime.now(UTC), **outcome)
            await self._store.webhooks.log_attempt(task.job_id, log)
            status = outcome.get("status_code")
            if isinstance(status, int) and 200 <= status < 300:
                break
            if attempt < attempts and not stop.is_set():
                # Exponential backoff: base, 2 x base, 4 x base, ...
                await asyncio.sleep(self._settings.webhook_retry_base_s * 2 ** (attempt - 1))
            elif stop.is_set():
                # Left in the stream, unacknowledged: another worker takes it over.
                return
        await self._store.webhooks.finish(task)

    async def _attempt(
        self,
        http: httpx.AsyncClient,
        secret: str,
        url: str,
        delivery_id: str,
        event_type: str,
        job: dict[str, object],
    ) -> dict[str, int | str]:
        """One POST: {"status_code": ...} or {"error": ...}."""
        try:
            await check_destination(url, self._allowed)
            body, headers = signed_request(secret, delivery_id, event_type, job)
            response = await http.post(url, content=body, headers=headers)
        except InvalidWebhook as exc:
            return {"error": exc.message}
        except httpx.HTTPError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"status_code": response.status_code}
