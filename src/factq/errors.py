"""factq's exceptions: one tree, turned into HTTP responses only in `factq.api.errors`.

FactqError
├── BackendUnavailable          Redis or RabbitMQ cannot be reached
├── BrokerConfigError           the broker refuses our queue declaration
├── QueueFull                   the job queue is at its maximum length
├── InvalidInput                a request or task input is not acceptable
├── InvalidRequest              a query parameter is not acceptable
├── UnknownTask                 no task of that name is registered
├── InvalidWebhook              a webhook URL that may not be used
├── PayloadTooLarge             a request body over the limit
├── UnsupportedMediaType        a request body that is not sent as JSON
├── IdempotencyConflict         an Idempotency-Key reused with another request
├── RateLimited                 too many submissions, or jobs in flight, for now
├── JobNotFound                 unknown job, or another owner's job
├── Unauthorized / Forbidden    credentials missing, wrong or not allowed
└── JobStateConflict            the job's status does not allow the operation
    ├── NotFinished
    ├── AlreadyFinished
    ├── JobFailed
    └── JobCancelled

BackendUnavailable, QueueFull and RateLimited are also RetryLater: they carry
`retry_after_s`, sent as Retry-After.
"""

from __future__ import annotations

from typing import Any


class FactqError(Exception):
    """Base of every error factq raises on purpose."""

    type = "internal"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class RetryLater(FactqError):
    """A refusal that passes with time: answered with Retry-After."""

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(RetryLater):
    type = "unavailable"


class BrokerConfigError(FactqError):
    type = "broker_config"


class QueueFull(RetryLater):
    type = "queue_full"


class InvalidInput(FactqError):
    type = "invalid_input"


class InvalidWebhook(FactqError):
    type = "invalid_webhook"


class RateLimited(RetryLater):
    type = "rate_limited"


class IdempotencyConflict(FactqError):
    type = "idempotency_conflict"


class PayloadTooLarge(FactqError):
    type = "payload_too_large"


class UnsupportedMediaType(FactqError):
    type = "unsupported_media_type"


class InvalidRequest(FactqError):
    type = "invalid_request"


class UnknownTask(FactqError):
    type = "unknown_task"


class JobNotFound(FactqError):
    type = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class Unauthorized(FactqError):
    type = "unauthorized"


class Forbidden(FactqError):
    type = "forbidden"


class JobStateConflict(FactqError):
    type = "conflict"


class NotFinished(JobStateConflict):
    type = "not_finished"


class AlreadyFinished(JobStateConflict):
    type = "already_finished"


class JobFailed(JobStateConflict):
    type = "job_failed"


class JobCancelled(JobStateConflict):
    type = "job_cancelled"
