"""The Python client of factq: `Client` (blocking) and `AsyncClient` (asyncio).

    with Client() as client:                      # FACTQ_URL, FACTQ_API_KEY
        job = client.submit("factorial", {"n": 150000})
        job = client.wait(job.id, timeout_s=60)   # live events, polling as a fallback
        client.result(job.id, to="150000.txt")    # streamed to the file
        value = client.result_int(job.id)         # via hexadecimal, in linear time

Errors are the typed exceptions of `factq.client.errors`, one per `error.type`.
"""

from factq.client._async import AsyncClient
from factq.client._common import DEFAULT_URL
from factq.client._sync import Client
from factq.client.errors import (
    AlreadyFinished,
    Conflict,
    ConnectionFailed,
    FactqClientError,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    InvalidRequest,
    InvalidWebhook,
    JobCancelled,
    JobFailed,
    NotFinished,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnknownTask,
    WaitTimeout,
)
from factq.client.models import Job, JobError, JobEvent, JobMetrics, JobStatus

__all__ = [
    "DEFAULT_URL",
    "AlreadyFinished",
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "FactqClientError",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidRequest",
    "InvalidWebhook",
    "Job",
    "JobCancelled",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobMetrics",
    "JobStatus",
    "NotFinished",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "UnknownTask",
    "WaitTimeout",
]
