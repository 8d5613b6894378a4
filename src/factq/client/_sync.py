"""`Client`: the blocking client, on httpx and websockets' sync API."""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from factq.client._common import (
    DEFAULT_TASK,
    MAX_EVENT_BYTES,
    MAX_PAGE_SIZE,
    RESULT_CHUNK_BYTES,
    SOCKET_ERRORS,
    SOCKET_OPEN_TIMEOUT_S,
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
    raise_for_error,
    submit_body,
    submit_headers,
    submit_timeout,
    transport_errors,
    write_chunks,
)
from factq.client.errors import WaitTimeout
from factq.client.models import Job, JobEvent


class Client(ClientBase[httpx.Client]):
    """A blocking client of the factq API; use it as a context manager, or call close()."""

    _http_class = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def submit(
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
        response = self._request(
            "POST",
            "/v1/jobs",
            json=submit_body(task, input or {}, deadline_s=deadline_s, webhook=webhook),
            headers=submit_headers(wait_s, idempotency_key),
            timeout=submit_timeout(self._timeout, wait_s),
        )
        return parse_job(response)

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit jobs all or none (`{"task", "input"}` each); the jobs in the same order."""
        response = self._request("POST", "/v1/jobs/batch", json=batch_body(items))
        return parse_jobs(response)[0]

    def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return parse_job(self._request("GET", job_path(job_id)))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; AlreadyFinished when it has ended."""
        return parse_job(self._request("POST", job_path(job_id, "/cancel")))

    def delete(self, job_id: str) -> None:
        """Forget a finished job and its result now; NotFinished while it runs."""
        raise_for_error(self._request("DELETE", job_path(job_id)))

    def wait(
        self, job_id: str, timeout_s: float | None = None, *, on_update: OnUpdate | None = None
    ) -> Job:
        """Follow the job's events until it ends, polling when the socket fails; the final job.

        on_update is called with each new state of the job. Past timeout_s, WaitTimeout.
        """
        deadline = _Deadline(job_id, timeout_s)
        state = WaitState(on_update)
        while True:
            if state.should_use_socket:
                try:
                    with closing(self._socket_events(job_id, state.after, deadline)) as events:
                        for event in events:
                            if state.saw_event(event):
                                return event.job
                except SocketLost:
                    state.socket_lost()
            deadline.check()
            job = self.get(job_id)
            if state.saw_poll(job):
                return job
            time.sleep(deadline.clamp(state.backoff.next_delay()))
            deadline.check()

    def events(
        self, job_id: str, *, after: int | None = None, timeout_s: float | None = None
    ) -> Iterator[JobEvent]:
        """The job's events until it ends: its current state first, or those after `after`.

        A dropped socket is reopened where it left off; ConnectionFailed when that keeps
        failing. Past timeout_s in all, WaitTimeout.
        """
        deadline = _Deadline(job_id, timeout_s)
        state = EventsState(after)
        while True:
            try:
                with closing(self._socket_events(job_id, state.after, deadline)) as events:
                    for event in events:
                        if state.is_new(event):
                            yield event
                            if event.job.status.is_terminal:
                                return
                return
            except SocketLost as exc:
                state.lost(exc, self.events_url(job_id))
            time.sleep(deadline.clamp(state.backoff.next_delay()))
            deadline.check()

    def result(
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
        with (
            transport_errors(self.base_url),
            self._http.stream("GET", job_path(job_id, "/result"), params=params) as response,
        ):
            if not response.is_success:
                response.read()
                raise_for_error(response)
            return write_chunks(response.iter_bytes(chunk_bytes), to)

    def result_int(self, job_id: str) -> int:
        """The factorial's value as an int, read in hexadecimal: linear time, any size."""
        response = self._request("GET", job_path(job_id, "/result"), params={"format": "hex"})
        raise_for_error(response)
        # Base 16 converts in linear time and has no digit limit, unlike int(str).
        return int(response.content, 16)

    def list(self, status: str | None = None, limit: int = MAX_PAGE_SIZE) -> Iterator[Job]:
        """Every job of the caller, newest first, fetched `limit` (≤ 100) per page."""
        cursor: str | None = None
        while True:
            response = self._request("GET", "/v1/jobs", params=list_params(status, limit, cursor))
            jobs, cursor = parse_jobs(response)
            yield from jobs
            if cursor is None:
                return

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with transport_errors(self.base_url):
            return self._http.request(method, path, **kwargs)

    def _socket_events(
        self, job_id: str, after: int | None, deadline: _Deadline
    ) -> Generator[JobEvent, None, None]:
        """The events of one socket; SocketLost when it fails before the job ends."""
        reader = SocketReader(job_id)
        try:
            with connect(
                self.events_url(job_id, after=after),
                additional_headers=self._endpoint.socket_headers(),
                open_timeout=deadline.clamp(SOCKET_OPEN_TIMEOUT_S),
                max_size=MAX_EVENT_BYTES,
            ) as socket:
                while True:
                    try:
                        message = socket.recv(timeout=deadline.remaining())
                    except ConnectionClosedOK:
                        break
                    except TimeoutError:
                        deadline.check()
                        raise
                    event = reader.parse(message)
                    if event is not None:
                        yield event
        except WaitTimeout:
            raise
        except SOCKET_ERRORS as exc:
            raise reader.failed(exc) from exc
        reader.closed()


class _Deadline:
    """When a blocking wait must give up; no timeout, never."""

    def __init__(self, job_id: str, timeout_s: float | None) -> None:
        self._job_id = job_id
        self._timeout_s = timeout_s
        self._at = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._at is None else max(self._at - time.monotonic(), 0.0)

    def clamp(self, seconds: float) -> float:
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    def check(self) -> None:
        if self._at is not None and time.monotonic() >= self._at:
            raise WaitTimeout(f"job {self._job_id} did not finish within {self._timeout_s:g} s")
