"""The FastAPI application: its lifespan owns the Redis and RabbitMQ connections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

import factq
from factq.api import compat, events, health, jobs, page, prometheus
from factq.api.body_limit import BodySizeLimit
from factq.api.conversions import Conversions
from factq.api.deps import Resources
from factq.api.docs import install_docs
from factq.api.errors import install_error_handlers
from factq.api.openapi import install_openapi
from factq.api.queue_gauges import QueueGauges
from factq.api.ratelimit import SubmissionLimiter
from factq.api.request_ids import with_request_id
from factq.api.streams import StreamSlots
from factq.api.uploads import update_body_limit
from factq.broker import Broker
from factq.settings import Settings
from factq.state.events import EventHub
from factq.state.store import Store
from factq.submit import Submitter
from factq.tasks import TaskRegistry

logger = logging.getLogger(__name__)

# How long a stopping API waits for confirmations still waiting on Redis.
CONFIRM_SHUTDOWN_S = 10.0

DESCRIPTION = """\
Submit a job and get its id at once (202); workers compute it off the request
path; poll `GET /v1/jobs/{id}` or download `GET /v1/jobs/{id}/result`.
Errors are always `{"error": {"type": "...", "message": "..."}}`.
"""


class FactqAPI(FastAPI):
    """FastAPI, with each request given its id (`with_request_id`, outermost: an
    error's 500 carries it too), and the event sockets served ahead of its
    middleware and routing (`events.served_directly`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await with_request_id(self._serve, scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await events.served_directly(scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(settings: Settings, registry: TaskRegistry | None = None) -> FastAPI:
    """The API for one deployment; nothing connects until the lifespan starts."""
    tasks = registry or TaskRegistry.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Resources]:
        # Tasks' result conversions: big-number work, in a process made on first use.
        conversions = Conversions(settings)
        try:
            async with (
                AsyncExitStack() as stack,
                Store.open(settings) as store,
                Broker.open(
                    settings, tasks=list(tasks), name=f"factq-api-{settings.namespace}"
                ) as broker,
                EventHub.open(settings) as hub,
            ):
                await store.ping()
                for warning in await store.durability_warnings():
                    logger.warning("%s", warning)
                limiter = SubmissionLimiter(settings)
                stack.push_async_callback(limiter.aclose)
                submitter = Submitter(store, broker, tasks, settings)
                try:
                    yield {
                        "settings": settings,
                        "store": store,
                        "broker": broker,
                        "submitter": submitter,
                        "registry": tasks,
                        "hub": hub,
                        "conversions": conversions,
                        "limiter": limiter,
                        "streams": StreamSlots(settings.max_streams_per_caller),
                        "queues": QueueGauges(broker),
                        "stopping": app.state.stopping,
                    }
                finally:
                    await submitter.drain(CONFIRM_SHUTDOWN_S)
        finally:
            conversions.close()

    app = FactqAPI(
        title="factq",
        version=factq.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's pages load their files from CDNs: install_docs serves them from here.
        docs_url=None,
        redoc_url=None,
    )
    # Set by factq's server (factq.api.server.Server) the moment it is asked to stop.
    app.state.stopping = asyncio.Event()
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        # A worker's output of the largest n the deployment allows, streamed.
        per_path={"/factorial/update": update_body_limit(settings)},
    )
    if settings.allowed_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Prefer",
                "X-Request-ID",
            ],
            expose_headers=["Location", "Retry-After", "Preference-Applied", "X-Request-ID"],
        )
    install_error_handlers(app)
    install_openapi(app, tasks, settings)
    install_docs(app)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(compat.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    return app
