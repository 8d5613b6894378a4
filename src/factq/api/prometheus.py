"""`GET /metrics`: the API's series for Prometheus, with each task queue's depth
asked of RabbitMQ at scrape time."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from factq import metrics
from factq.api.deps import QueueGaugesDep
from factq.api.openapi import UNAVAILABLE, error_responses

router = APIRouter()


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Every series, summed over the API's processes, in Prometheus's "
            "text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(UNAVAILABLE),
    },
)
async def prometheus_metrics(queues: QueueGaugesDep) -> Response:
    """The API's series (every process's, summed) and each task queue's depth."""
    families = await queues.families()
    # Reading every process's files, and rendering, stay off the event loop.
    body = await asyncio.to_thread(metrics.exposition)
    return Response(body + metrics.render(families), media_type=metrics.CONTENT_TYPE)
