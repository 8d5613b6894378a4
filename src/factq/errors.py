"""factq's exceptions: one tree, turned into HTTP responses only in `factq.api.errors`.

FactqError                          base; `type` is the contract's error type
├── RetryLater                      passes with time: carries `retry_after_s` (Retry-After)
│   ├── BackendUnavailable          Redis or RabbitMQ cannot be reached
│   │   └── Overloaded              every Redis connection of the process is busy
│   ├── QueueFull                   the job queue is at its maximum length
│   └── RateLimited                 too many submissions, or jobs in flight, for now
├── BrokerConfigError               the broker refuses our queue declaration
├── InvalidInput                    a request or task input is not acceptable
├── InvalidWebhook                  a webhook URL that may not be used
├── IdempotencyConflict             an Idempotency-Key reused with another request
├── PayloadTooLarge                 a request body over the limit
├── UnsupportedMediaType            a request body that is not sent as JSON
├── InvalidRequest                  a query parameter or message is not acceptable
├── UnknownTask                     no task of that name is registered
├── JobNotFound                     unknown job, or another owner's job
├── Unauthorized                    credentials missing or wrong
├── Forbidden                       credentials that do not allow this
└── JobStateConflict                the job's status does not allow the operation
    ├── NotFinished
    ├── AlreadyFinished
    ├── JobFailed
    └── JobCancelled

`tests/test_errors_tree.py` checks this drawing against the classes below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


class Overloaded(BackendUnavailable):
    """Redis answers, but this process has no free connection to it for now."""

    type = "overloaded"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1)


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


def validation_details(
    errors: Iterable[Mapping[str, Any]],
    *,
    within: Sequence[str] = (),
    messages: Sequence[str] | None = None,
    in_body: bool = False,
) -> list[dict[str, Any]]:
    """pydantic's errors as the contract's details, `{"loc": "a.b", "message": ...}`:
    each location put under `within` (or, `in_body`, FastAPI's leading `body`
    left out, and the body itself called `body`), and the messages replaced by
    `messages` when given."""
    details = []
    for i, error in enumerate(errors):
        loc = [str(part) for part in error["loc"]]
        if in_body and loc[:1] == ["body"]:
            loc = loc[1:]
        if in_body and error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", "cannot parse")
            message = f"malformed JSON at character {loc[-1]}: {reason}"
            details.append({"loc": "", "message": message})
            continue
        message = messages[i] if messages is not None else error["msg"]
        where = ".".join([*within, *loc]) or ("body" if in_body else "")
        details.append({"loc": where, "message": message})
    return details


def first_problem(details: Sequence[Mapping[str, Any]]) -> str:
    """The first detail as one line: `loc: message`."""
    first = details[0]
    return f"{first['loc']}: {first['message']}" if first["loc"] else str(first["message"])
