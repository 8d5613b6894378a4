"""`Client`: the blocking client, on httpx and websockets' sync API."""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing
from types import TracebackType
from typing import Any, TypeVar

import httpx
from websockets.sync.client import connect

from factq.client import _common as common
from factq.client._common import Destination, OnUpdate
from factq.client.models import Job, JobEvent

T = TypeVar("T")


class Client(common.ClientBase[httpx.Client]):
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
        task: str = common.DEFAULT_TASK,
        input: Mapping[str, Any] | None = None,
        *,
        wait_s: float | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        webhook: Mapping[str, Any] | None = None,
    ) -> Job:
        """Submit one job; with wait_s, the answer waits up to that long (≤ 60) for its end."""
        call = common.submit_call(task, input, wait_s, idempotency_key, deadline_s, webhook)
        return self._send(call)

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit jobs all or none (`{"task", "input"}` each); the jobs in the same order."""
        return self._send(common.batch_call(items))

    def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return self._send(common.get_call(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; AlreadyFinished when it has ended."""
        return self._send(common.cancel_call(job_id))

    def delete(self, job_id: str) -> None:
        """Forget a finished job and its result now; NotFinished while it runs."""
        self._send(common.delete_call(job_id))

    def wait(
        self, job_id: str, timeout_s: float | None = None, *, on_update: OnUpdate | None = None
    ) -> Job:
        """Follow the job's events until it ends, polling when the socket fails; the final job.

        on_update is called with each new state of the job. Past timeout_s, WaitTimeout.
        """
        deadline = common.Deadline(job_id, timeout_s)
        watch = common.Watch(on_update=on_update)
        while True:
            if watch.should_use_socket:
                try:
                    with closing(self._socket_events(job_id, watch, deadline)) as events:
                        for _ in events:
                            pass
                except common.SocketLost:
                    watch.socket_lost()
            if watch.final is not None:
                return watch.final
            deadline.check()
            job = self.get(job_id)
            if watch.saw_poll(job):
                return job
            time.sleep(deadline.clamp(watch.backoff.next_delay()))
            deadline.check()

    def events(
        self, job_id: str, *, after: int | None = None, timeout_s: float | None = None
    ) -> Iterator[JobEvent]:
        """The job's events until it ends: its current state first, or those after `after`.

        A dropped socket is reopened where it left off; ConnectionFailed when that keeps
        failing. Past timeout_s in all, WaitTimeout.
        """
        deadline = common.Deadline(job_id, timeout_s)
        watch = common.Watch(after)
        while True:
            try:
                with closing(self._socket_events(job_id, watch, deadline)) as events:
                    yield from events
                return
            except common.SocketLost as exc:
                delay = watch.events_lost(exc, self.events_url(job_id))
            time.sleep(deadline.clamp(delay))
            deadline.check()

    def result(
        self,
        job_id: str,
        *,
        to: Destination,
        format: str | None = None,
        chunk_bytes: int = common.RESULT_CHUNK_BYTES,
    ) -> int:
        """Stream the job's full result to a path or binary file; the bytes written.

        format: one of the task's result formats (the factorial's: decimal, hex).
        A path is written only once the download is complete.
        """
        call = common.result_call(job_id, format)
        with common.transport_errors(self.base_url):
            response = self._http.send(self._build(call), stream=True)
            with closing(response):
                if not response.is_success:
                    response.read()
                call.read(response)
                return common.write_chunks(response.iter_bytes(chunk_bytes), to)

    def result_int(self, job_id: str) -> int:
        """The factorial's value as an int, read in hexadecimal: linear time, any size."""
        return self._send(common.result_int_call(job_id))

    def list(self, status: str | None = None, limit: int = common.MAX_PAGE_SIZE) -> Iterator[Job]:
        """Every job of the caller, newest first, fetched `limit` (≤ 100) per page."""
        for page in common.JobPages(status, limit):
            yield from self._send(page)

    def _send(self, call: common.Call[T]) -> T:
        with common.transport_errors(self.base_url):
            response = self._http.send(self._build(call))
        return call.read(response)

    def _socket_events(
        self, job_id: str, watch: common.Watch, deadline: common.Deadline
    ) -> Generator[JobEvent, None, None]:
        """The job's new events on one socket, until it ends; SocketLost when the socket
        fails or closes first."""
        reader = common.SocketReader(job_id, watch)
        with (
            reader.reading(),
            connect(
                self.events_url(job_id, after=watch.after),
                additional_headers=self._endpoint.socket_headers(),
                open_timeout=deadline.clamp(common.SOCKET_OPEN_TIMEOUT_S),
                max_size=common.MAX_EVENT_BYTES,
            ) as socket,
        ):
            while watch.final is None:
                try:
                    message = socket.recv(timeout=deadline.remaining())
                except TimeoutError:
                    deadline.check()
                    raise
                yield from reader.parse(message)
