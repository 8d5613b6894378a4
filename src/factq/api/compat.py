"""The original Flask design's three routes, kept working with the same behaviour.

`GET /factorial?no=N` queues n! and answers the id as plain text;
`GET /factorial/result?id=ID` answers `{"input", "status", "output"}`;
`POST /factorial/update` lets a worker holding the worker token set a job's
outcome. They share the v1 routes' store, queue and validation.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from factq.api.conversions import Conversions, format_uploads
from factq.api.deps import (
    ConversionsDep,
    LimiterDep,
    OwnerDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
    SubmitterDep,
    checked_job_id,
    require_worker,
)
from factq.api.json_body import JSONBodyRoute, is_json, refuse_media_type
from factq.api.openapi import (
    ALREADY_FINISHED,
    FORBIDDEN,
    INVALID_REQUEST,
    NOT_FOUND,
    QUEUE_FULL,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    RouteError,
    error_responses,
)
from factq.api.ratelimit import admit
from factq.api.uploads import Update, read_update
from factq.errors import (
    AlreadyFinished,
    InvalidInput,
    InvalidRequest,
    JobNotFound,
)
from factq.schema import Job, JobError, JobRequest, JobStatus
from factq.state.records import Outcome, Transition
from factq.state.store import Store
from factq.submit import validate_request
from factq.tasks import Task

router = APIRouter(tags=["compatibility"], route_class=JSONBodyRoute)

CompatStatus = Literal["processing", "done", "failed", "cancelled"]

COMPAT_STATUS: dict[JobStatus, CompatStatus] = {
    JobStatus.QUEUED: "processing",
    JobStatus.RUNNING: "processing",
    JobStatus.SUCCEEDED: "done",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


class CompatResult(BaseModel):
    input: int
    status: CompatStatus
    output: str = Field(description="The decimal value once done, else empty.")


class CompatUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: Literal["processing", "done", "failed"]
    output: str = ""


@router.get(
    "/factorial",
    response_class=PlainTextResponse,
    summary="Queue n! (original route)",
    responses={
        200: {"content": {"text/plain": {}}, "description": "The new job's id."},
        **error_responses(INVALID_REQUEST, UNAUTHORIZED, RATE_LIMITED, UNAVAILABLE, QUEUE_FULL),
    },
)
async def queue_factorial(
    request: Request,
    settings: SettingsDep,
    limiter: LimiterDep,
    store: StoreDep,
    submitter: SubmitterDep,
    registry: RegistryDep,
    owner: OwnerDep,
    no: Annotated[str, Query(description="n, a decimal integer.", pattern=r"^[0-9]{1,20}$")],
) -> PlainTextResponse:
    """Queue factorial(no); the body is the job id."""
    if not re.fullmatch(r"[0-9]{1,20}", no):
        raise InvalidRequest(f"no must be a non-negative decimal integer, not {no[:40]!r}")
    try:
        job_request = JobRequest(task="factorial", input={"n": int(no)})
        job = validate_request(job_request, registry, owner, settings.job_deadline_s)
    except InvalidInput as exc:
        raise InvalidRequest(exc.message.replace("input.n", "no"), details=exc.details) from None
    await admit(request, limiter, store, owner, 1)
    [created] = await submitter.enqueue([job])
    return PlainTextResponse(created.id)


@router.get(
    "/factorial/result",
    response_model=CompatResult,
    summary="A factorial job's state and value (original route)",
    responses=error_responses(INVALID_REQUEST, UNAUTHORIZED, NOT_FOUND, UNAVAILABLE),
)
async def factorial_result(
    store: StoreDep, owner: OwnerDep, id: Annotated[str, Query(description="The job id.")]
) -> JSONResponse | StreamingResponse:
    """`{"input", "status", "output"}`, the decimal value streamed once done."""
    job = await store.jobs.get(checked_job_id(id), owner)
    if job.task != "factorial":
        raise JobNotFound(id)
    n = int(job.input["n"])
    status = COMPAT_STATUS[job.status]
    if status != "done":
        return JSONResponse({"input": n, "status": status, "output": ""})
    size = await store.results.size(job.id, "decimal")
    head = f'{{"input":{n},"status":"done","output":"'.encode()
    return StreamingResponse(
        _framed(head, store.results.chunks(job.id, "decimal", size), b'"}'),
        media_type="application/json",
        headers={"Content-Length": str(len(head) + size + 2)},
    )


@router.post(
    "/factorial/update",
    summary="Set a job's outcome (internal, worker token)",
    dependencies=[Depends(require_worker)],
    responses=error_responses(
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        ALREADY_FINISHED,
        RouteError(
            413, "The body is over the largest output FACTQ_MAX_N allows (payload_too_large)."
        ),
        UNSUPPORTED_MEDIA_TYPE,
        RouteError(422, "The body is not acceptable (invalid_input)."),
        UNAVAILABLE,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CompatUpdate.model_json_schema()}},
        }
    },
)
async def update_factorial(
    request: Request, store: StoreDep, registry: RegistryDep, conversions: ConversionsDep
) -> CompatResult:
    """Mark a job processing, done with its decimal output, or failed.

    The body is read as it arrives, its digits straight into Redis: an output
    as long as the largest n allows is taken (see `factq.api.uploads`). The
    task makes its output (summary, other formats) of those digits, in the
    API's process for conversions (see `factq.api.conversions`).
    """
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        refuse_media_type(content_type)
    task = registry.get_task("factorial")
    update = await read_update(request, store)
    uploads = format_uploads(task, update.upload)
    try:
        job_id = checked_job_id(update.job_id)
        job = await store.jobs.get(job_id)
        if job.task != task.name:
            raise JobNotFound(job_id)
        transition = await _apply_update(store, conversions, task, job, update, uploads)
    finally:
        # Moved into the job's results when it succeeded; otherwise gone now.
        await store.results.drop_uploads(list(uploads.values()))
    updated = transition.job or await store.jobs.get(job_id)
    if transition.outcome is Outcome.TERMINAL:
        raise AlreadyFinished(f"job {job_id} has already finished ({updated.status})")
    return CompatResult(
        input=int(updated.input["n"]), status=COMPAT_STATUS[updated.status], output=""
    )


async def _apply_update(
    store: Store,
    conversions: Conversions,
    task: Task,
    job: Job,
    update: Update,
    uploads: dict[str, str],
) -> Transition:
    if update.status == "processing":
        return await store.runs.mark_running(job.id)
    if update.status == "failed":
        message = update.message.decode("utf-8", errors="replace") or "failed"
        return await store.runs.mark_failed(job.id, JobError(type="task_error", message=message))
    if not update.digits or not update.is_decimal or not uploads:
        raise InvalidInput("output must be the decimal digits of the value")
    if job.status is JobStatus.QUEUED:
        await store.runs.mark_running(job.id)
    summary = await conversions.from_upload(task, uploads)
    return await store.runs.mark_succeeded_from_uploads(job.id, summary, uploads)


async def _framed(head: bytes, body: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    yield head
    async for chunk in body:
        yield chunk
    yield tail
