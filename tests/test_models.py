"""The job as users see it, built from its Redis hash."""

from __future__ import annotations

import json

from factq.schema import JobStatus
from factq.state.records import job_from_fields


def test_a_finished_job_has_its_metrics_and_result_url() -> None:
    job = job_from_fields(
        {
            "id": "ab" * 16,
            "task": "factorial",
            "input": json.dumps({"n": 5}),
            "status": "succeeded",
            "created_at": "1700000000.000000",
            "started_at": "1700000000.250000",
            "finished_at": "1700000001.000000",
            "attempts": "1",
            "cancel_requested": "0",
            "result": json.dumps({"digits": 3, "head": "120", "tail": "120"}),
            "owner": "someone",
            "seq": "3",
        }
    )
    assert job.status is JobStatus.SUCCEEDED
    assert job.metrics.queue_s == 0.25
    assert job.metrics.run_s == 0.75
    assert job.result == {
        "digits": 3,
        "head": "120",
        "tail": "120",
        "url": f"/v1/jobs/{'ab' * 16}/result",
    }
    shown = job.model_dump(mode="json")
    assert "owner" not in shown
    assert shown["created_at"] == "2023-11-14T22:13:20Z"


def test_a_queued_job_has_no_times_yet() -> None:
    job = job_from_fields(
        {
            "id": "cd" * 16,
            "task": "factorial",
            "input": "{}",
            "status": "queued",
            "created_at": "1700000000.5",
            "attempts": "0",
        }
    )
    assert job.started_at is None and job.finished_at is None
    assert job.metrics.queue_s is None and job.metrics.run_s is None
    assert job.error is None and job.result is None and job.progress is None


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
