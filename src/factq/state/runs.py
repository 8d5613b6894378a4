"""The moves of a job's run, as workers (and the update route) make them:
started, then ended once (succeeded, failed or cancelled). A cancel asked
meanwhile wins over any other end; each move is one Lua script."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript

from factq.errors import BackendUnavailable
from factq.schema import JobError, JobStatus
from factq.settings import Settings
from factq.state import lua
from factq.state.connection import backend_errors
from factq.state.keys import Keys
from factq.state.observed import observed
from factq.state.records import Outcome, Transition

# The finish script's marker: the results are in upload keys, to be moved.
FROM_UPLOADS = "@uploads"


class Runs:
    """Start and end jobs' runs; remember an attempt whose process died."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: dict[str, AsyncScript], settings: Settings
    ) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._settings = settings
        self._pipeliner = lua.Pipeliner(client, settings.redis_min_replicas)

    @backend_errors
    async def mark_running(self, job_id: str) -> Transition:
        """Start an attempt: queued (or running, after a lost worker) -> running."""
        outcome, flat = await self._run(
            "start", keys=self._keys.job_keys(job_id), args=[*self._common(job_id)]
        )
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def mark_succeeded(
        self, job_id: str, summary: dict[str, Any], results: dict[str, bytes]
    ) -> Transition:
        """Store the result and end the job, once; a cancel asked meanwhile wins."""
        fmts = list(results)
        outcome, flat = await self._succeed(job_id, summary, fmts, [results[f] for f in fmts])
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def mark_succeeded_from_uploads(
        self, job_id: str, summary: dict[str, Any], uploads: dict[str, str]
    ) -> Transition:
        """`mark_succeeded`, with each format's result moved from its upload key."""
        fmts = list(uploads)
        outcome, flat = await self._succeed(
            job_id, summary, fmts, [FROM_UPLOADS], [uploads[fmt] for fmt in fmts]
        )
        if outcome == Outcome.MISSING_UPLOAD.encode():
            # Expired, or lost with a Redis restart: the job is unchanged.
            raise BackendUnavailable("the received result was lost before it was stored; retry")
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def finish_like(
        self, job_id: str, other_id: str, formats: Sequence[str], *, at_submission: bool = False
    ) -> Transition:
        """End the running job as the finished job other_id of the same computation
        ended, with a copy of its result or its error; outcome UNAVAILABLE when
        that job, or a result of it, is gone.

        `at_submission`: the job was just made and is still queued; it ends only
        as other_id succeeded (UNAVAILABLE otherwise), without running."""
        # Two steps: the other job lives in another slot. Its outcome is read,
        # then written to this job by a script that changes it once.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._keys.job(other_id), ["status", "result", "error"])
            for fmt in formats:
                pipe.get(self._keys.result(other_id, fmt))
            (status, summary, error), *values = await pipe.execute()
        if status == b"succeeded" and any(value is None for value in values):
            status = None  # a result is gone: the script answers 'unavailable'
        outcome, flat = await self._run(
            "finish_from",
            keys=[
                *self._keys.job_keys(job_id),
                *(self._keys.result(job_id, fmt) for fmt in formats),
            ],
            args=[
                *self._common(job_id),
                "at_submission" if at_submission else "",
                status or b"",
                summary or b"",
                error or b"",
                *(value or b"" for value in values),
            ],
        )
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def mark_failed(self, job_id: str, error: JobError) -> Transition:
        """End the job as failed, once."""
        outcome, flat = await self._run(
            "finish",
            keys=self._keys.job_keys(job_id),
            args=[*self._common(job_id), JobStatus.FAILED.value, error.model_dump_json()],
        )
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def mark_cancelled(self, job_id: str) -> Transition:
        """End the job as cancelled, once (its computation was stopped)."""
        outcome, flat = await self._run(
            "finish",
            keys=self._keys.job_keys(job_id),
            args=[*self._common(job_id), JobStatus.CANCELLED.value, ""],
        )
        return observed(Transition.from_reply(outcome, flat))

    @backend_errors
    async def note_lost_attempt(self, job_id: str) -> None:
        """The running attempt's pool process died (read back by `was_last_attempt_lost`)."""
        await self._run("lost", self._keys.job_keys(job_id), [])

    @backend_errors
    async def was_last_attempt_lost(self, job_id: str) -> bool:
        return await self._redis.hget(self._keys.job(job_id), "lost") == b"1"

    async def _succeed(
        self,
        job_id: str,
        summary: dict[str, Any],
        fmts: Sequence[str],
        values: Sequence[bytes | str],
        uploads: Sequence[str] = (),
    ) -> Any:
        """The finish script ending the job succeeded, its results in `values` (or,
        with `values` FROM_UPLOADS, moved from the `uploads` keys)."""
        return await self._run(
            "finish",
            keys=[
                *self._keys.job_keys(job_id),
                *(self._keys.result(job_id, fmt) for fmt in fmts),
                *uploads,
            ],
            args=[
                *self._common(job_id),
                JobStatus.SUCCEEDED.value,
                json.dumps(summary, separators=(",", ":")),
                *values,
            ],
        )

    async def _run(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One script call, in the pipeline of this turn of the event loop (the
        jobs a worker holds change state at once, and share round trips)."""
        [reply] = await self._pipeliner.run([(self._scripts[name], keys, args)])
        return reply

    def _common(self, job_id: str) -> tuple[str, int]:
        """The arguments every state-change script takes first."""
        return self._keys.events_channel(job_id), self._settings.result_ttl_s
