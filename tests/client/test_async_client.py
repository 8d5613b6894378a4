"""`AsyncClient` against real `factq api` and `factq worker` processes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import gmpy2
import pytest

from factq.client import (
    AlreadyFinished,
    AsyncClient,
    ConnectionFailed,
    InvalidInput,
    InvalidRequest,
    JobCancelled,
    JobStatus,
    NotFinished,
    NotFound,
    WaitTimeout,
)
from tests.support.service import Service, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SLOW = {"steps": 100, "duration_s": 30.0}


@pytest.fixture
async def client(service: Service) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(service.base_url) as client:
        yield client


async def test_submit_wait_and_stream_the_result_to_a_file(
    client: AsyncClient, tmp_path: Path
) -> None:
    job = await client.submit("factorial", {"n": 150000})
    assert (await client.get(job.id)).id == job.id
    done = await client.wait(job.id, timeout_s=60)
    assert done.status is JobStatus.SUCCEEDED
    path = tmp_path / "150000.txt"
    assert await client.result(job.id, to=path) == 711_273
    assert path.read_bytes() == gmpy2.fac(150000).digits().encode()
    assert await client.result_int(job.id) == gmpy2.fac(150000)


async def test_submit_with_prefer_wait(client: AsyncClient) -> None:
    job = await client.submit(input={"n": 1000}, wait_s=30)
    assert job.status is JobStatus.SUCCEEDED
    decimal = io.BytesIO()
    await client.result(job.id, to=decimal)
    assert decimal.getvalue() == gmpy2.fac(1000).digits().encode()


async def test_events_follow_a_job_live(client: AsyncClient) -> None:
    job = await client.submit("steps", {"steps": 5, "duration_s": 0.5})
    events = [event async for event in client.events(job.id, timeout_s=30)]
    seqs = [event.seq for event in events]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert JobStatus.RUNNING in {event.job.status for event in events}
    assert events[-1].job.status is JobStatus.SUCCEEDED


async def test_submit_many_and_list_every_page(client: AsyncClient) -> None:
    jobs = await client.submit_many([{"input": {"n": n}} for n in range(7)])
    listed = [job.id async for job in client.list(limit=2)]
    assert listed == [job.id for job in reversed(jobs)]
    await asyncio.gather(*(client.wait(job.id, timeout_s=30) for job in jobs))
    assert len([job async for job in client.list(status="succeeded")]) == 7


async def test_cancel_and_typed_errors(client: AsyncClient) -> None:
    job = await client.submit("steps", SLOW)
    with pytest.raises(NotFinished):
        await client.result(job.id, to=io.BytesIO())
    await client.cancel(job.id)
    assert (await client.wait(job.id, timeout_s=15)).status is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        await client.result(job.id, to=io.BytesIO())
    with pytest.raises(AlreadyFinished):
        await client.cancel(job.id)
    with pytest.raises(InvalidInput):
        await client.submit(input={"n": -1})
    with pytest.raises(NotFound):
        await client.get("0" * 32)
    with pytest.raises(NotFound):
        await client.wait("0" * 32, timeout_s=10)
    with pytest.raises(InvalidRequest, match="not a job id"):
        await client.wait("not-an-id", timeout_s=10)


async def test_wait_falls_back_to_polling_when_the_socket_is_unreachable(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setattr(
        client, "events_url", lambda job_id, after=None: f"ws://127.0.0.1:{closed}/nowhere"
    )
    job = await client.submit("steps", {"steps": 10, "duration_s": 1.0})
    done = await client.wait(job.id, timeout_s=30)
    assert done.status is JobStatus.SUCCEEDED
    with pytest.raises(ConnectionFailed):
        async for _ in client.events(job.id, timeout_s=30):
            pass


async def test_wait_gives_up_at_its_timeout(client: AsyncClient) -> None:
    job = await client.submit("steps", SLOW)
    with pytest.raises(WaitTimeout):
        await client.wait(job.id, timeout_s=0.5)
    with pytest.raises(WaitTimeout):
        async for _ in client.events(job.id, timeout_s=0.5):
            pass
    await client.cancel(job.id)


async def test_an_unreachable_service_is_a_connection_failure() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectionFailed) as raised:
            await client.get("0" * 32)
    assert raised.value.status_code is None
