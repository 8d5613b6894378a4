"""`AsyncClient`: the asyncio client, on httpx and websockets' asyncio API."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from websockets.asyncio.client import connect

from factq.client import _common as common
from factq.client._common import Destination, OnUpdate
from factq.client.models import Job, JobEvent

T = TypeVar("T")


class AsyncClient(common.ClientBase[httpx.AsyncClient]):
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
        return await self._send(call)

    async def submit_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit jobs all or none (`{"task", "input"}` each); the jobs in the same order."""
        return await self._send(common.batch_call(items))

    async def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return await self._send(common.get_call(job_id))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; AlreadyFinished when it has ended."""
        return await self._send(common.cancel_call(job_id))

    async def delete(self, job_id: str) -> None:
        """Forget a finished job and its result now; NotFinished while it runs."""
        await self._send(common.delete_call(job_id))

    async def wait(
        self, job_id: str, timeout_s: float | None = None, *, on_update: OnUpdate | None = None
    ) -> Job:
        """Follow the job's events until it ends, polling when the socket fails; the final job.

        on_update is called with each new state of the job. Past timeout_s, WaitTimeout.
        """
        async with _expiring(job_id, _deadline(timeout_s), timeout_s):
            return await self._wait(job_id, common.Watch(on_update=on_update))

    async def _wait(self, job_id: str, watch: common.Watch) -> Job:
        while True:
            if watch.should_use_socket:
                try:
                    async with contextlib.aclosing(self._socket_events(job_id, watch)) as events:
                        async for _ in events:
                            pass
                except common.SocketLost:
                    watch.socket_lost()
            if watch.final is not None:
                return watch.final
            job = await self.get(job_id)
            if watch.saw_poll(job):
                return job
            await asyncio.sleep(watch.backoff.next_delay())

    async def events(
        self, job_id: str, *, after: int | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events until it ends: its current state first, or those after `after`.

        A dropped socket is reopened where it left off; ConnectionFailed when that keeps
        failing. Past timeout_s in all, WaitTimeout.
        """
        deadline = _deadline(timeout_s)
        watch = common.Watch(after)
        while True:
            try:
                async with contextlib.aclosing(
                    self._socket_events(job_id, watch, deadline)
                ) as events:
                    async for event in events:
                        yield event
                return
            except common.SocketLost as exc:
                delay = watch.events_lost(exc, self.events_url(job_id))
            async with _expiring(job_id, deadline):
                await asyncio.sleep(delay)

    async def result(
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
            response = await self._http.send(self._build(call), stream=True)
            async with contextlib.aclosing(response):
                if not response.is_success:
                    await response.aread()
                call.read(response)
                return await _write_chunks(response.aiter_bytes(chunk_bytes), to)

    async def result_int(self, job_id: str) -> int:
        """The factorial's value as an int, read in hexadecimal: linear time, any size."""
        return await self._send(common.result_int_call(job_id))

    async def list(
        self, status: str | None = None, limit: int = common.MAX_PAGE_SIZE
    ) -> AsyncIterator[Job]:
        """Every job of the caller, newest first, fetched `limit` (≤ 100) per page."""
        for page in common.JobPages(status, limit):
            for job in await self._send(page):
                yield job

    async def _send(self, call: common.Call[T]) -> T:
        with common.transport_errors(self.base_url):
            response = await self._http.send(self._build(call))
        return call.read(response)

    async def _socket_events(
        self, job_id: str, watch: common.Watch, deadline: float | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's new events on one socket, until it ends; SocketLost when the socket
        fails or closes first.

        The deadline (loop time) bounds each wait separately: a timeout held
        across a yield would cancel whatever the consumer is doing meanwhile.
        """
        reader = common.SocketReader(job_id, watch)
        with reader.reading():
            async with _expiring(job_id, deadline):
                socket = await connect(
                    self.events_url(job_id, after=watch.after),
                    additional_headers=self._endpoint.socket_headers(),
                    open_timeout=common.SOCKET_OPEN_TIMEOUT_S,
                    max_size=common.MAX_EVENT_BYTES,
                )
            async with socket:
                while watch.final is None:
                    async with _expiring(job_id, deadline):
                        message = await socket.recv()
                    for event in reader.parse(message):
                        yield event


def _deadline(timeout_s: float | None) -> float | None:
    """The loop time timeout_s from now; None for no timeout."""
    return None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s


@contextlib.asynccontextmanager
async def _expiring(
    job_id: str, deadline: float | None, timeout_s: float | None = None
) -> AsyncIterator[None]:
    """Bound the body by the deadline (loop time; None, no bound): WaitTimeout past it,
    saying the timeout_s it came from when given."""
    timeout = asyncio.timeout_at(deadline)
    try:
        async with timeout:
            yield
    except TimeoutError as exc:
        if not timeout.expired():
            raise
        raise common.wait_timeout(job_id, timeout_s) from exc


async def _write_chunks(chunks: AsyncIterable[bytes], to: Destination) -> int:
    """Write every chunk to a path (replaced only once complete) or a file, off the loop."""
    with common.downloading(to) as download:
        await asyncio.to_thread(download.open)
        async for chunk in chunks:
            await asyncio.to_thread(download.write, chunk)
        return await asyncio.to_thread(download.finish)
