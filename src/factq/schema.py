"""The data of the public contract: jobs, their events, webhooks and requests.

Pydantic models only, importing nothing else of factq: the server and the
client (`factq.client`) both speak these. How a job is stored in Redis, and
read back, is `factq.state.records`'s business.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEvent = Literal["started", "progress", "completed"]


def _completed_only() -> list[WebhookEvent]:
    return ["completed"]


class WebhookRequest(BaseModel):
    """Where to POST a job's events, and which ones (`completed` is any final state)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, examples=["https://example.com/hooks/factq"])
    events: list[WebhookEvent] = Field(default_factory=_completed_only, min_length=1)


class WebhookDelivery(BaseModel):
    """One attempt to deliver one event."""

    type: str
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None


class WebhookState(BaseModel):
    """A job's webhook as the job shows it: what it asked for, and every attempt so far."""

    url: str
    events: list[WebhookEvent]
    deliveries: list[WebhookDelivery] = Field(default_factory=list)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobError(BaseModel):
    """Why a job failed."""

    type: str = Field(examples=["task_error"])
    message: str


class JobMetrics(BaseModel):
    """Where the time went."""

    queue_s: float | None = Field(None, description="Seconds from submission to the last start.")
    run_s: float | None = Field(None, description="Seconds from the last start to the end.")


class Job(BaseModel):
    """One call of one task on one input."""

    id: str
    task: str
    input: dict[str, Any]
    status: JobStatus
    progress: float | None = None
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None
    metrics: JobMetrics = Field(default_factory=JobMetrics)
    webhook: WebhookState | None = None


class JobEvent(BaseModel):
    """One change of one job: its new state, numbered from 1 by `seq`."""

    type: Literal["job"] = "job"
    seq: int
    job: Job


class JobRequest(BaseModel):
    """A submission: which task, on which input."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"task": "factorial", "input": {"n": 150000}}]},
    )

    task: str = Field(description="A task name from GET /v1/tasks.", min_length=1, max_length=200)
    input: dict[str, Any] = Field(description="The task's input, as its input schema says.")
    webhook: WebhookRequest | None = Field(
        None, description="POST these events of the job to this URL, signed."
    )
    deadline_s: float | None = Field(
        None,
        # A number, never a boolean or a numeric string (as JSON Schema says).
        strict=True,
        gt=0,
        le=30 * 86_400,
        description="Not started within this many seconds of submission: not run, "
        "failed with `expired`. Default FACTQ_JOB_DEADLINE_S (none).",
    )


class BatchRequest(BaseModel):
    """Several submissions, accepted all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[Any] = Field(
        description="Job requests, each like the body of POST /v1/jobs.",
        json_schema_extra={"items": {"$ref": "#/components/schemas/JobRequest"}},
    )
