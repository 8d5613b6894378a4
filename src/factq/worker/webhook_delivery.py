"""Draining the webhook queue: each delivery signed, sent, retried with backoff,
and each attempt logged on its job.

The deliveries wait in a Redis stream, queued by the same script that made
the change; the workers read it as one consumer group, so each delivery is
sent by one worker, and one whose worker died is taken over by another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from factq import metrics
from factq.errors import BackendUnavailable, InvalidWebhook
from factq.logs import log_context, redact
from factq.schema import WebhookDelivery
from factq.settings import Settings
from factq.state.store import Store
from factq.state.webhook_queue import WebhookTask
from factq.webhooks.destinations import allowed_hosts
from factq.webhooks.signing import signed_request

if TYPE_CHECKING:
    pass

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
        # Imported here: a worker that sends no webhooks never loads the HTTP
        # client (6 MB of memory a process).
        import httpx

        # One context for every delivery: building one loads the CA bundle.
        ssl_context = httpx.create_ssl_context()
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
                # The delivery's lines, the HTTP client's too, are about its job.
                with log_context(job_id=task.job_id):
                    sending = asyncio.create_task(self._deliver(ssl_context, secret, task, stop))
                self._sending.add(sending)
                sending.add_done_callback(self._sent)
        if self._sending:
            await asyncio.wait(self._sending, timeout=self._settings.webhook_timeout_s)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots.release()

    async def _deliver(
        self, ssl_context: ssl.SSLContext, secret: str, task: WebhookTask, stop: asyncio.Event
    ) -> None:
        webhook = task.job.webhook
        if webhook is None:
            await self._store.webhooks.finish(task)
            return
        job = task.job.model_dump(mode="json", exclude={"webhook"})
        delivery_id = f"{task.job_id}-{task.seq}-{task.type}"
        attempts = self._settings.webhook_max_attempts
        delivered = False
        for attempt in range(1, attempts + 1):
            outcome = await self._attempt(
                ssl_context, secret, task.url, delivery_id, task.type, job
            )
            status = outcome.get("status_code")
            delivered = isinstance(status, int) and 200 <= status < 300
            metrics.webhook_attempts(
                "success" if delivered else "error" if status is None else "http_error"
            ).inc()
            log = WebhookDelivery(type=task.type, attempt=attempt, at=datetime.now(UTC), **outcome)
            await self._store.webhooks.log_attempt(task.job_id, log)
            if delivered:
                break
            if attempt < attempts and not stop.is_set():
                # Exponential backoff: base, 2 x base, 4 x base, ...
                await asyncio.sleep(self._settings.webhook_retry_base_s * 2 ** (attempt - 1))
            elif stop.is_set():
                # Left in the stream, unacknowledged: another worker takes it over.
                return
        metrics.webhook_deliveries("delivered" if delivered else "failed").inc()
        await self._store.webhooks.finish(task)

    async def _attempt(
        self,
        ssl_context: ssl.SSLContext,
        secret: str,
        url: str,
        delivery_id: str,
        event_type: str,
        job: dict[str, object],
    ) -> dict[str, int | str]:
        """One POST: {"status_code": ...} or {"error": ...}."""
        import httpx

        from factq.webhooks.sender import post_checked

        body, headers = signed_request(secret, delivery_id, event_type, job)
        limit_s = self._settings.webhook_timeout_s
        try:
            # The whole attempt, not only each read: headers dripped a byte at
            # a time would otherwise never time out.
            async with asyncio.timeout(limit_s):
                response = await post_checked(
                    url,
                    self._allowed,
                    content=body,
                    headers=headers,
                    timeout_s=limit_s,
                    ssl_context=ssl_context,
                )
        except TimeoutError:
            return {"error": f"no answer within {limit_s:g} s"}
        except InvalidWebhook as exc:
            return {"error": redact(exc.message)}
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # The job shows its deliveries: no credential of the URL in them.
            return {"error": redact(f"{type(exc).__name__}: {exc}")[:300]}
        return {"status_code": response.status_code}
