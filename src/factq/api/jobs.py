"""The /v1 job routes: submit, read, download, delete."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from factq.aio import cancel_and_wait
from factq.api.deps import (
    HubDep,
    LimiterDep,
    OwnerDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
    StreamsDep,
    SubmitterDep,
    checked_job_id,
)
from factq.api.json_body import JSONBodyRoute
from factq.api.openapi import (
    ALREADY_FINISHED,
    IDEMPOTENCY_CONFLICT,
    INVALID_REQUEST,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    QUEUE_FULL,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    RouteError,
    error_responses,
)
from factq.api.ratelimit import admit
from factq.api.streams import caller_of
from factq.errors import (
    FactqError,
    InvalidInput,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    NotFinished,
    RateLimited,
)
from factq.schema import BatchRequest, Job, JobRequest, JobStatus
from factq.state.events import EventHub, follow
from factq.state.store import Store
from factq.submit import check_webhooks, validate_batch, validate_request

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=JSONBodyRoute)

MAX_WAIT_S = 60.0
# How long a wait lets its tasks end once it is over.
CANCEL_GRACE_S = 1.0
DIGITS = re.compile(r"[0-9]+")

JobId = Annotated[str, Path(description="The job's id, as returned on submission.")]

# What a route that reads one job can answer.
JOB_ERRORS = (INVALID_REQUEST, UNAUTHORIZED, NOT_FOUND, UNAVAILABLE)
# What a route that submits can answer, besides its own 422.
SUBMIT_ERRORS = (
    UNAUTHORIZED,
    NOT_FOUND,
    IDEMPOTENCY_CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    RATE_LIMITED,
    UNAVAILABLE,
    QUEUE_FULL,
)


class JobList(BaseModel):
    jobs: list[Job]


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = None


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="Your jobs, newest first",
    responses=error_responses(INVALID_REQUEST, UNAUTHORIZED, UNAVAILABLE),
)
async def list_jobs(
    store: StoreDep,
    owner: OwnerDep,
    status_filter: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs with this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(description="`next_cursor` of the previous page.", pattern=r"^[0-9]{1,20}$"),
    ] = None,
) -> JobPage:
    """The caller's jobs, newest first, a page at a time; `next_cursor` is null at the end."""
    if cursor is not None and not DIGITS.fullmatch(cursor):
        raise InvalidRequest("cursor must be a next_cursor from a previous page")
    jobs, after = await store.index.page(
        owner,
        status=status_filter,
        limit=limit,
        cursor=int(cursor) if cursor is not None else None,
    )
    return JobPage(jobs=jobs, next_cursor=str(after) if after is not None else None)


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    summary="Submit a job",
    responses=error_responses(
        INVALID_REQUEST,
        *SUBMIT_ERRORS,
        RouteError(
            422,
            "Invalid input, unknown task or webhook (invalid_input, unknown_task, "
            "invalid_webhook).",
        ),
    ),
)
async def submit_job(
    body: JobRequest,
    request: Request,
    response: Response,
    limiter: LimiterDep,
    settings: SettingsDep,
    store: StoreDep,
    submitter: SubmitterDep,
    registry: RegistryDep,
    hub: HubDep,
    owner: OwnerDep,
    streams: StreamsDep,
    prefer: Annotated[
        str | None,
        Header(description="`wait=S` (S up to 60): answer when the job ends, or after S seconds."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="The same key and body again returns the same job, not a new one.",
        ),
    ] = None,
) -> Job:
    """Queue one job; the answer comes at once with the job's id and `Location`.

    With `Prefer: wait=S` the answer waits until the job ends (200 with the
    finished job) or S seconds pass (202 as usual).
    """
    new = validate_request(body, registry, owner, settings.job_deadline_s)
    await check_webhooks([new], settings)
    await admit(request, limiter, store, owner, 1)
    job, replayed = await submitter.enqueue_once(new, idempotency_key, body)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    wait_s = preferred_wait_s(prefer)
    if wait_s is None:
        return job
    if job.status.is_terminal:
        # Answered from a stored result as it was made: nothing to wait for.
        response.headers["Preference-Applied"] = f"wait={wait_s:g}"
        response.status_code = status.HTTP_200_OK
        return job
    # A wait follows the job live, as a stream does, and counts as one: past
    # the caller's cap it is not applied (the job is queued all the same).
    try:
        slot = streams.acquire(caller_of(request, owner))
    except RateLimited:
        return job
    response.headers["Preference-Applied"] = f"wait={wait_s:g}"
    try:
        job = await wait_until_final(request, store, hub, job, owner, wait_s)
    finally:
        slot.release()
    if job.status.is_terminal:
        response.status_code = status.HTTP_200_OK
    return job


@router.post(
    "/jobs/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobList,
    summary="Submit many jobs, all or none",
    responses=error_responses(
        *SUBMIT_ERRORS,
        RouteError(
            422,
            "One or more items are invalid, each named by its index (invalid_input, "
            "unknown_task, invalid_webhook).",
        ),
    ),
)
async def submit_batch(
    body: BatchRequest,
    request: Request,
    limiter: LimiterDep,
    settings: SettingsDep,
    store: StoreDep,
    submitter: SubmitterDep,
    registry: RegistryDep,
    owner: OwnerDep,
) -> JobList:
    """Queue up to `FACTQ_MAX_BATCH` jobs; one bad item rejects the batch, naming its index."""
    if not body.jobs:
        raise InvalidInput("a batch needs at least one job")
    if len(body.jobs) > settings.max_batch:
        raise InvalidInput(f"a batch holds at most {settings.max_batch} jobs, not {len(body.jobs)}")
    jobs = validate_batch(body.jobs, registry, owner, settings.job_deadline_s)
    await check_webhooks(jobs, settings)
    await admit(request, limiter, store, owner, len(jobs))
    return JobList(jobs=await submitter.enqueue(jobs))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a queued or running job",
    responses=error_responses(*JOB_ERRORS, ALREADY_FINISHED),
)
async def cancel_job(job_id: JobId, store: StoreDep, owner: OwnerDep) -> Job:
    """A queued job is cancelled at once; a running one is flagged (`cancel_requested`)
    and its computation stopped, so it is `cancelled` within a second."""
    return await store.jobs.cancel(checked_job_id(job_id), owner)


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    summary="A job's state",
    responses=error_responses(*JOB_ERRORS),
)
async def get_job(job_id: JobId, store: StoreDep, owner: OwnerDep) -> Job:
    """The job as it is now; poll this, or follow its events."""
    return await store.jobs.get(checked_job_id(job_id), owner)


@router.get(
    "/jobs/{job_id}/result",
    response_class=StreamingResponse,
    summary="Download a job's full result",
    responses={
        200: {"content": {"text/plain": {}}, "description": "The value, streamed."},
        **error_responses(
            *JOB_ERRORS,
            RouteError(409, "No result: not_finished, job_failed or job_cancelled."),
        ),
    },
)
async def get_result(
    job_id: JobId,
    store: StoreDep,
    registry: RegistryDep,
    owner: OwnerDep,
    format_name: Annotated[
        str | None,
        Query(
            alias="format",
            description="A result format of the task, e.g. `hex`.",
            pattern=r"^[a-z0-9_-]{1,40}$",
        ),
    ] = None,
) -> StreamingResponse:
    """The full value, streamed from Redis in chunks: decimal digits, or `?format=hex`."""
    job = await store.jobs.get(checked_job_id(job_id), owner)
    task = registry.get_task(job.task)
    result_format = task.result_format(format_name)
    if result_format is None:
        known = ", ".join(f.name for f in task.formats)
        raise InvalidRequest(
            f"unknown format {format_name!r} for task {task.name!r}; use one of: {known}"
        )
    require_succeeded(job)
    size = await store.results.size(job.id, result_format.name)
    filename = f"{job.task}-{job.id}-{result_format.name}.{result_format.extension}"
    return StreamingResponse(
        store.results.chunks(job.id, result_format.name, size),
        media_type=result_format.media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'inline; filename="{filename}"',
        },
    )


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Forget a finished job now",
    responses=error_responses(
        *JOB_ERRORS, RouteError(409, "The job is still queued or running (not_finished).")
    ),
)
async def delete_job(
    job_id: JobId, store: StoreDep, registry: RegistryDep, owner: OwnerDep
) -> Response:
    """Delete a finished job and its result before their TTL."""
    job = await store.jobs.get(checked_job_id(job_id), owner)
    task = registry.get(job.task)
    formats = [f.name for f in task.formats] if task else []
    computation = None
    if task is not None and task.deterministic:
        computation = store.computations.of(task.name, job.input, task.version)
    await store.jobs.delete(job.id, owner, formats, computation)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def preferred_wait_s(prefer: str | None) -> float | None:
    """The seconds of a `Prefer: wait=S` header (RFC 7240), at most 60; None without
    one, or when S is not a number above 0 (answered as if no wait was asked)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None
            return min(seconds, MAX_WAIT_S) if seconds > 0 else None  # NaN is not > 0
    return None


async def wait_until_final(
    request: Request, store: Store, hub: EventHub, job: Job, owner: str, wait_s: float
) -> Job:
    """The job once it has ended, or as it is when wait_s have passed, the client
    has hung up, or the server is stopping. The job is queued whatever happens:
    a wait that fails (Redis went away) ends it early too."""

    latest = [job]

    async def follow_to_end() -> None:
        try:
            async for event in follow(store.events, hub, job.id, owner):
                latest[0] = event.job
        except FactqError as exc:
            logger.debug("wait on job %s ended early: %s", job.id, exc)

    follower = asyncio.create_task(follow_to_end())
    others = [asyncio.create_task(_hung_up(request))]
    others.append(asyncio.create_task(request.state.stopping.wait()))
    try:
        await asyncio.wait([follower, *others], timeout=wait_s, return_when="FIRST_COMPLETED")
    finally:
        # Bounded: a task that keeps running must not hold the answer.
        await cancel_and_wait([follower, *others], CANCEL_GRACE_S)
    return latest[0]


async def _hung_up(request: Request) -> None:
    """Return once the client has disconnected (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def require_succeeded(job: Job) -> None:
    """Raise the contract's 409 for a job that has no result to give."""
    if job.status is JobStatus.SUCCEEDED:
        return
    if job.status is JobStatus.FAILED:
        raise JobFailed(f"job {job.id} failed; it has no result")
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} was cancelled; it has no result")
    raise NotFinished(f"job {job.id} is {job.status}; its result is not ready")
