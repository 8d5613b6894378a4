"""`AsyncClient`: the asyncio client, on httpx and websockets' asyncio API."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from factq.client._common import (
    DEFAULT_TASK,
    MAX_EVENT_BYTES,
    MAX_PAGE_SIZE,
    RESULT_CHUNK_BYTES,
    SOCKET_ERRORS,
    SOCKET_OPEN_TIMEOUT_S,
    BinaryWriter,
    ClientBase,
    Destination,
    EventsState,
    OnUpdate,
    SocketLost,
    SocketReader,
    WaitState,
    batch_body,
    job_path,
    list_params,
    parse_job,
    parse_jobs,
    part_path,
    raise_for_error,
    submit_body,
    submit_headers,
    submit_timeout,
    transport_errors,
)
from factq.client.errors import WaitTimeout
from factq.client.models import Job, JobEvent


class AsyncClient(ClientBase[httpx.AsyncClient]):
    """An asyncio client of the factq API; use it with `async with`, or await aclose()."""

    _http_class = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled caller must not leave the connections open.
        await asyncio.shield(self.aclose())

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def submit(
        self,
        task: str = DEFAULT_TASK,
        input: Mapping[str, Any] | None = None,
        *,
        wait_s: float | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        webhook: Mapping[str, Any] | None = None,
    ) -> Job:
        """Submit one job; with wait_s, the answer waits up to that long (≤ 60) for its end."""
        response = await self._request(
            "POST",
            "/v1/jobs",
            json=submit_body(task, input or {}, deadline_s=deadline_s, webhook=webhook),
            headers=submit_headers(wait_s, idempotency_key),
            timeout=submit_timeout(self._timeout, wait_s),
        )
        return parse_job(response)

    async def submit_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit jobs all or none (`{"task", "input"}` each); the jobs in the same order."""
        response = await self._request("POST", "/v1/jobs/batch", json=batch_body(items))
        return parse_jobs(response)[0]

    async def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return parse_job(await self._request("GET", job_path(job_id)))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; AlreadyFinished when it has ended."""
        return parse_job(await self._request("POST", job_path(job_id, "/cancel")))

    async def delete(self, job_id: str) -> None:
        """Forget a finished job and its result now; NotFinished while it runs."""
        raise_for_error(await self._request("DELETE", job_path(job_id)))

    async def wait(
        self, job_id: str, timeout_s: float | None = None, *, on_update: OnUpdate | None = None
    ) -> Job:
        """Follow the job's events until it ends, polling when the socket fails; the final job.

        on_update is called with each new state of the job. Past timeout_s, WaitTimeout.
        """
        timeout = asyncio.timeout(timeout_s)
        try:
            async with timeout:
                return await self._wait(job_id, WaitState(on_update))
        except TimeoutError as exc:
            if not timeout.expired():
                raise
            raise WaitTimeout(f"job {job_id} did not finish within {timeout_s:g} s") from exc

    async def _wait(self, job_id: str, state: WaitState) -> Job:
        while True:
            if state.should_use_socket:
                try:
                    async with contextlib.aclosing(
                        self._socket_events(job_id, state.after)
                    ) as events:
                        async for event in events:
                            if state.saw_event(event):
                                return event.job
                except SocketLost:
                    state.socket_lost()
            job = await self.get(job_id)
            if state.saw_poll(job):
                return job
            await asyncio.sleep(state.backoff.next_delay())

    async def events(
        self, job_id: str, *, after: int | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events until it ends: its current state first, or those after `after`.

        A dropped socket is reopened where it left off; ConnectionFailed when that keeps
        failing. Past timeout_s in all, WaitTimeout.
        """
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        state = EventsState(after)
        while True:
            try:
                async with contextlib.aclosing(
                    self._socket_events(job_id, state.after, deadline)
                ) as events:
                    async for event in events:
                        if state.is_new(event):
                            yield event
                            if event.job.status.is_terminal:
                                return
                return
            except SocketLost as exc:
                state.lost(exc, self.events_url(job_id))
            async with _expiring(job_id, deadline):
                await asyncio.sleep(state.backoff.next_delay())

    async def result(
        self,
        job_id: str,
        *,
        to: Destination,
        format: str | None = None,
        chunk_bytes: int = RESULT_CHUNK_BYTES,
    ) -> int:
        """Stream the job's full result to a path or binary file; the bytes written.

        format: one of the task's result formats (the factorial's: decimal, hex).
        A path is written only once the download is complete.
        """
        params = {"format": format} if format is not None else None
        with transport_errors(self.base_url):
            async with self._http.stream(
                "GET", job_path(job_id, "/result"), params=params
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_error(response)
                return await _write_chunks(response.aiter_bytes(chunk_bytes), to)

    async def result_int(self, job_id: str) -> int:
        """The factorial's value as an int, read in hexadecimal: linear time, any size."""
        params = {"format": "hex"}
        response = await self._request("GET", job_path(job_id, "/result"), params=params)
        raise_for_error(response)
        # Base 16 converts in linear time and has no digit limit, unlike int(str).
        return int(response.content, 16)

    async def list(
        self, status: str | None = None, limit: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[Job]:
        """Every job of the caller, newest first, fetched `limit` (≤ 100) per page."""
        cursor: str | None = None
        while True:
            params = list_params(status, limit, cursor)
            jobs, cursor = parse_jobs(await self._request("GET", "/v1/jobs", params=params))
            for job in jobs:
                yield job
            if cursor is None:
                return

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with transport_errors(self.base_url):
            return await self._http.request(method, path, **kwargs)

    async def _socket_events(
        self, job_id: str, after: int | None, deadline: float | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """The events of one socket; SocketLost when it fails before the job ends.

        The deadline (loop time) bounds each wait separately: a timeout held
        across a yield would cancel whatever the consumer is doing meanwhile.
        """
        reader = SocketReader(job_id)
        try:
            async with _expiring(job_id, deadline):
                socket = await connect(
                    self.events_url(job_id, after=after),
                    additional_headers=self._endpoint.socket_headers(),
                    open_timeout=SOCKET_OPEN_TIMEOUT_S,
                    max_size=MAX_EVENT_BYTES,
                )
            async with socket:
                while True:
                    try:
                        async with _expiring(job_id, deadline):
                            message = await socket.recv()
                    except ConnectionClosedOK:
                        break
                    event = reader.parse(message)
                    if event is not None:
                        yield event
        except WaitTimeout:
            raise
        except SOCKET_ERRORS as exc:
            raise reader.failed(exc) from exc
        reader.closed()


@contextlib.asynccontextmanager
async def _expiring(job_id: str, deadline: float | None) -> AsyncIterator[None]:
    """Bound the body by the deadline (loop time; None, no bound): WaitTimeout past it."""
    timeout = asyncio.timeout_at(deadline)
    try:
        async with timeout:
            yield
    except TimeoutError as exc:
        if not timeout.expired():
            raise
        raise WaitTimeout(f"job {job_id} did not finish before its deadline") from exc


async def _write_chunks(chunks: AsyncIterable[bytes], to: Destination) -> int:
    """Write every chunk to a path (replaced only once complete) or a file, off the loop."""
    if not isinstance(to, str | os.PathLike):
        return await _write_all(chunks, to)
    path = Path(to)
    part = part_path(path)
    try:
        file = await asyncio.to_thread(part.open, "xb")
        try:
            written = await _write_all(chunks, file)
        finally:
            file.close()
        await asyncio.to_thread(os.replace, part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


async def _write_all(chunks: AsyncIterable[bytes], file: BinaryWriter) -> int:
    written = 0
    async for chunk in chunks:
        await asyncio.to_thread(file.write, chunk)
        written += len(chunk)
    return written
