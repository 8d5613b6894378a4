"""How jobs are stored: a Redis hash of strings, as the Lua scripts write it.

`job_from_fields` reads a hash (or an event, which carries the hash) into the
contract's `Job`; `Outcome` names what each script answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from factq.schema import (
    Job,
    JobError,
    JobEvent,
    JobMetrics,
    JobStatus,
    WebhookRequest,
    WebhookState,
)


class Outcome(StrEnum):
    """What a state-change script found or did (the first string of its reply)."""

    # start.lua
    STARTED = "started"
    EXPIRED = "expired"
    # finish.lua, finish_from.lua
    FINISHED = "finished"
    MISSING_UPLOAD = "missing_upload"
    UNAVAILABLE = "unavailable"
    # cancel.lua
    REQUESTED = "requested"
    # delete.lua
    DELETED = "deleted"
    # create.lua
    # idempotency.lua
    CLAIMED = "claimed"
    HELD = "held"
    # Several.
    CANCELLED = "cancelled"
    TERMINAL = "terminal"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated submission, before it is stored."""

    job_id: str
    task: str
    input: dict[str, Any]
    owner: str
    webhook: WebhookRequest | None = None
    deadline_s: float | None = None


class Transition:
    """The result of a state-change script: what happened, and the job after it.

    The job is read from the script's reply on first use: a worker that only
    needs the outcome never pays for building it.
    """

    __slots__ = ("_flat", "_job", "outcome")

    def __init__(self, outcome: Outcome, flat: list[bytes]) -> None:
        self.outcome = outcome
        self._flat = flat
        self._job: Job | None = None

    @classmethod
    def from_reply(cls, outcome: bytes, flat: list[bytes]) -> Transition:
        return cls(Outcome(outcome.decode()), flat)

    @property
    def job(self) -> Job | None:
        if self._job is None and self._flat:
            self._job = job_from_fields(flat_fields(self._flat))
        return self._job

    def raw_fields(self) -> dict[bytes, bytes]:
        """The job's hash after the change, as Redis sent it: no job built, nothing decoded."""
        return dict(zip(self._flat[::2], self._flat[1::2], strict=True))


def flat_fields(flat: list[bytes]) -> dict[str, str]:
    """A hash as HGETALL returns it inside a script: a flat list of keys and values."""
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def job_from_fields(fields: dict[str, str]) -> Job:
    """The job its Redis hash describes (strings, as the Lua scripts write them)."""
    job_id = fields["id"]
    created = datetime.fromtimestamp(float(fields["created_at"]), tz=UTC)
    started = _timestamp(fields.get("started_at"))
    finished = _timestamp(fields.get("finished_at"))
    result: dict[str, Any] | None = None
    if "result" in fields:
        result = {**json.loads(fields["result"]), "url": f"/v1/jobs/{job_id}/result"}
    return Job(
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


def event_from_fields(fields: dict[str, str]) -> JobEvent:
    """A job's state as an event carries it: its hash, with the `seq` of the change."""
    return JobEvent(seq=int(fields["seq"]), job=job_from_fields(fields))


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
