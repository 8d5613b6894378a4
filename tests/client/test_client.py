"""`Client`, the blocking client, against real `factq api` and `factq worker` processes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import gmpy2
import pytest

from factq.client import (
    AlreadyFinished,
    Client,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobStatus,
    NotFinished,
    NotFound,
    UnknownTask,
    WaitTimeout,
)
from tests.support.service import Service, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SLOW = {"steps": 100, "duration_s": 30.0}


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(service.base_url) as client:
        yield client


def test_submit_wait_and_stream_the_result_to_a_file(client: Client, tmp_path: Path) -> None:
    job = client.submit("factorial", {"n": 150000})
    assert job.status is JobStatus.QUEUED
    assert client.get(job.id).id == job.id
    done = client.wait(job.id, timeout_s=60)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result is not None and done.result["digits"] == 711_273
    path = tmp_path / "out" / "150000.txt"
    path.parent.mkdir()
    written = client.result(job.id, to=path, chunk_bytes=64 * 1024)
    assert written == 711_273
    assert path.read_bytes() == gmpy2.fac(150000).digits().encode()
    assert [p.name for p in path.parent.iterdir()] == ["150000.txt"], "a part file was left"


def test_result_to_an_open_file_and_in_hex(client: Client) -> None:
    job = client.wait(client.submit(input={"n": 20000}).id, timeout_s=60)
    decimal, hexadecimal = io.BytesIO(), io.BytesIO()
    client.result(job.id, to=decimal)
    client.result(job.id, to=hexadecimal, format="hex")
    assert decimal.getvalue() == gmpy2.fac(20000).digits().encode()
    assert hexadecimal.getvalue() == gmpy2.fac(20000).digits(16).encode()


def test_result_int_is_the_exact_value(client: Client) -> None:
    job = client.submit(input={"n": 150000}, wait_s=60)
    assert job.status is JobStatus.SUCCEEDED, "Prefer: wait should hand back the finished job"
    value = client.result_int(job.id)
    assert isinstance(value, int)
    assert value == gmpy2.fac(150000)


def test_submit_many_and_list_every_page_newest_first(client: Client) -> None:
    first = client.submit_many([{"task": "factorial", "input": {"n": n}} for n in range(5)])
    single = client.submit(input={"n": 3})
    second = client.submit_many([{"input": {"n": n}} for n in range(4)])
    submitted = [job.id for job in [*first, single, *second]]
    assert [job.input["n"] for job in first] == list(range(5))
    listed = [job.id for job in client.list(limit=3)]
    assert listed == list(reversed(submitted))
    for job_id in submitted:
        client.wait(job_id, timeout_s=30)
    assert {job.id for job in client.list(status="succeeded", limit=2)} == set(submitted)
    assert list(client.list(status="failed")) == []


def test_cancel_a_running_job_then_it_has_no_result(client: Client) -> None:
    job = client.submit("steps", SLOW)
    for event in client.events(job.id, timeout_s=30):
        if event.job.status is JobStatus.RUNNING:
            break
    cancelled = client.cancel(job.id)
    assert cancelled.cancel_requested or cancelled.status is JobStatus.CANCELLED
    assert client.wait(job.id, timeout_s=15).status is JobStatus.CANCELLED
    with pytest.raises(JobCancelled) as raised:
        client.result(job.id, to=io.BytesIO())
    assert raised.value.status_code == 409
    with pytest.raises(AlreadyFinished):
        client.cancel(job.id)


def test_errors_are_typed(client: Client) -> None:
    with pytest.raises(InvalidInput) as invalid:
        client.submit(input={"n": "150000"})
    assert (invalid.value.status_code, invalid.value.type) == (422, "invalid_input")
    assert invalid.value.details and invalid.value.details[0]["loc"] == "input.n"
    with pytest.raises(UnknownTask):
        client.submit("nope", {"n": 1})
    with pytest.raises(NotFound) as missing:
        client.get("0" * 32)
    assert (missing.value.status_code, missing.value.type) == (404, "not_found")
    running = client.submit("steps", SLOW)
    with pytest.raises(NotFinished) as unfinished:
        client.result(running.id, to=io.BytesIO())
    assert (unfinished.value.status_code, unfinished.value.type) == (409, "not_finished")
    client.cancel(running.id)
    failed = client.wait(client.submit("fail", {"message": "boom"}).id, timeout_s=30)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "boom" in failed.error.message
    with pytest.raises(JobFailed):
        client.result(failed.id, to=io.BytesIO())


def test_a_result_that_cannot_be_had_leaves_no_file(client: Client, tmp_path: Path) -> None:
    running = client.submit("steps", SLOW)
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(NotFinished):
        client.result(running.id, to=folder / "result.txt")
    client.cancel(running.id)
    assert list(folder.iterdir()) == []


def test_events_come_in_order_until_the_job_ends(client: Client) -> None:
    job = client.submit("steps", {"steps": 5, "duration_s": 0.5})
    events = list(client.events(job.id, timeout_s=30))
    seqs = [event.seq for event in events]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert events[-1].job.status is JobStatus.SUCCEEDED
    replayed = list(client.events(job.id, after=0, timeout_s=30))
    assert [event.seq for event in replayed] == list(range(1, seqs[-1] + 1))


def test_wait_falls_back_to_polling_when_the_socket_is_unreachable(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()
    monkeypatch.setattr(
        client, "events_url", lambda job_id, after=None: f"ws://127.0.0.1:{closed}/nowhere"
    )
    job = client.submit("steps", {"steps": 10, "duration_s": 1.0})
    seen: list[JobStatus] = []
    done = client.wait(job.id, timeout_s=30, on_update=lambda job: seen.append(job.status))
    assert done.status is JobStatus.SUCCEEDED
    assert seen[-1] is JobStatus.SUCCEEDED
    assert JobStatus.RUNNING in seen, "polling should have seen the job running"


def test_wait_gives_up_at_its_timeout(client: Client) -> None:
    job = client.submit("steps", SLOW)
    with pytest.raises(WaitTimeout):
        client.wait(job.id, timeout_s=0.5)
    with pytest.raises(WaitTimeout):
        for _ in client.events(job.id, timeout_s=0.5):
            pass
    client.cancel(job.id)


def test_wait_for_an_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.wait("f" * 32, timeout_s=10)
