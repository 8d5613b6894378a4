"""Jobs and events as the client receives them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from factq import schema
from factq.schema import JobError, JobMetrics, JobStatus

__all__ = ["Job", "JobError", "JobEvent", "JobMetrics", "JobStatus"]


class Job(schema.Job):
    """A job as the service reports it; fields a newer service adds are kept, not dropped."""

    model_config = ConfigDict(extra="allow")


class JobEvent(BaseModel):
    """One change of one job, numbered from 1 by `seq`."""

    model_config = ConfigDict(extra="allow")

    type: str = "job"
    seq: int
    job: Job
