"""schemathesis hooks for tests/test_openapi_fuzz.py (loaded via SCHEMATHESIS_HOOKS).

JSON Schema counts `2.0` as an integer, and schemathesis sends integers spelled
that way in JSON bodies, but factq's contract wants a JSON integer (`"n": 2.0`
is refused, as `1.5` or `"2"` are). No schema keyword can say so; this drops
exactly that refusal, and only that one, from what the check reports.

Likewise `?format=` of GET /v1/jobs/{job_id}/result lists the formats of every
task, but a job has its own task's only (no `hex` for an embed job): the 400
that names the job's task and its formats is dropped too.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    refused_whole_float = (
        isinstance(failure, RejectedPositiveData)
        and _has_whole_float(case.body)
        and "valid integer" in response.text
    )
    refused_other_tasks_format = (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 400
        and "unknown format" in response.text
        and "for task" in response.text
    )
    return not (refused_whole_float or refused_other_tasks_format)


def _has_whole_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_whole_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_whole_float(item) for item in value)
    return False
