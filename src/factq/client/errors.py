"""The client's exceptions: one per `error.type` of the contract, mapped in `error_from_response`.

FactqClientError                  .status_code .type .message .details .retry_after_s
├── ConnectionFailed              no answer from the service (refused, reset, timed out)
├── WaitTimeout                   a wait ran past its timeout (also a TimeoutError)
├── InvalidRequest          400   a query parameter the route does not take
├── Unauthorized            401   no API key, or one that is not valid
├── Forbidden               403
├── NotFound                404   unknown job, or another key's job
├── Conflict                409   the job's status does not allow it
│   ├── NotFinished               still queued or running
│   ├── JobFailed                 no result: the job failed
│   ├── JobCancelled              no result: the job was cancelled
│   ├── AlreadyFinished           too late to cancel
│   └── IdempotencyConflict       an Idempotency-Key reused with another body
├── PayloadTooLarge         413
├── InvalidInput            422   bad body or task input
├── UnknownTask             422
├── InvalidWebhook          422
├── RateLimited             429   see retry_after_s
└── Unavailable             503   Redis or RabbitMQ down; see retry_after_s
    └── QueueFull                 the job queue is at its maximum length

An `error.type` this client does not know raises the base class, with `.type` set.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, ClassVar

import httpx


class FactqClientError(Exception):
    """Base of every error the client raises; `.type` is the contract's `error.type`."""

    error_type: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = error_type or self.error_type
        self.details = details
        self.retry_after_s = retry_after_s


class ConnectionFailed(FactqClientError):
    error_type = "connection_failed"


class WaitTimeout(FactqClientError, TimeoutError):
    error_type = "wait_timeout"


class InvalidRequest(FactqClientError):
    error_type = "invalid_request"


class Unauthorized(FactqClientError):
    error_type = "unauthorized"


class Forbidden(FactqClientError):
    error_type = "forbidden"


class NotFound(FactqClientError):
    error_type = "not_found"


class Conflict(FactqClientError):
    error_type = "conflict"


class NotFinished(Conflict):
    error_type = "not_finished"


class JobFailed(Conflict):
    error_type = "job_failed"


class JobCancelled(Conflict):
    error_type = "job_cancelled"


class AlreadyFinished(Conflict):
    error_type = "already_finished"


class IdempotencyConflict(Conflict):
    error_type = "idempotency_conflict"


class PayloadTooLarge(FactqClientError):
    error_type = "payload_too_large"


class InvalidInput(FactqClientError):
    error_type = "invalid_input"


class UnknownTask(FactqClientError):
    error_type = "unknown_task"


class InvalidWebhook(FactqClientError):
    error_type = "invalid_webhook"


class RateLimited(FactqClientError):
    error_type = "rate_limited"


class Unavailable(FactqClientError):
    error_type = "unavailable"


class QueueFull(Unavailable):
    error_type = "queue_full"


_BY_TYPE: dict[str, type[FactqClientError]] = {
    cls.error_type: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        NotFinished,
        JobFailed,
        JobCancelled,
        AlreadyFinished,
        IdempotencyConflict,
        PayloadTooLarge,
        InvalidInput,
        UnknownTask,
        InvalidWebhook,
        RateLimited,
        Unavailable,
        QueueFull,
    )
}

# For answers without the contract's error body, such as a proxy's HTML page.
_BY_STATUS: dict[int, type[FactqClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from_response(response: httpx.Response) -> FactqClientError:
    """The typed error for an error response whose body has been read."""
    status_code = response.status_code
    retry_after_s = parse_retry_after(response.headers.get("retry-after"))
    body = _error_body(response)
    if body is None:
        cls = _BY_STATUS.get(status_code, FactqClientError)
        text = response.text.strip()[:200] or response.reason_phrase
        return cls(
            f"HTTP {status_code}: {text}",
            status_code=status_code,
            error_type=cls.error_type if cls is not FactqClientError else "http_error",
            retry_after_s=retry_after_s,
        )
    error_type = str(body.get("type") or "error")
    details = body.get("details")
    return _BY_TYPE.get(error_type, FactqClientError)(
        str(body.get("message") or f"HTTP {status_code}"),
        status_code=status_code,
        error_type=error_type,
        details=details if isinstance(details, list) else None,
        retry_after_s=retry_after_s,
    )


def _error_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
