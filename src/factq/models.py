"""The job as users see it, and how it is read from its Redis hash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from factq.webhooks import WebhookState


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

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Job:
        """Build a job from its Redis hash (strings, as the Lua scripts write them)."""
        job_id = fields["id"]
        created = datetime.fromtimestamp(float(fields["created_at"]), tz=UTC)
        started = _timestamp(fields.get("started_at"))
        finished = _timestamp(fields.get("finished_at"))
        result: dict[str, Any] | None = None
        if "result" in fields:
            result = {**json.loads(fields["result"]), "url": f"/v1/jobs/{job_id}/result"}
        return cls(
            id=job_id,
            task=fields["task"],
            input=json.loads(fields["input"]),
            status=JobStatus(fields["status"]),
            progress=float(fields["progress"]) if "progress" in fields else None,
            cancel_requested=fields.get("cancel_requested") == "1",
            created_at=created,
            started_at=started,
            finished_at=finished,
            attempts=int(fields.get("attempts", "0")),
            error=JobError.model_validate_json(fields["error"]) if "error" in fields else None,
            result=result,
            metrics=JobMetrics(
                queue_s=_seconds_between(created, started),
                run_s=_seconds_between(started, finished),
            ),
            webhook=_webhook(fields),
        )


def _webhook(fields: dict[str, str]) -> WebhookState | None:
    if "webhook" not in fields:
        return None
    deliveries = json.loads(fields.get("webhook_log", "[]"))
    return WebhookState(**json.loads(fields["webhook"]), deliveries=deliveries or [])


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=UTC)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)


class JobEvent(BaseModel):
    """One change of one job: its new state, numbered from 1 by `seq`."""

    type: Literal["job"] = "job"
    seq: int
    job: Job

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobEvent:
        """From the job's hash as an event carries it (with its `seq`)."""
        return cls(seq=int(fields["seq"]), job=Job.from_fields(fields))
