"""`Prefer: wait=S`: a wait that is no wait answers at once, a client that hangs up
ends its wait, and a stopping server answers the waits it holds."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from factq.api.server import Server
from factq.settings import Settings
from tests.conftest import api_client, factq_server
from tests.support.service import running_service
from tests.support.waiting import until, until_true

JOB = {"task": "factorial", "input": {"n": 5}}


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "abc", "nan", "-inf", ""])
async def test_a_wait_that_is_no_wait_answers_at_once(settings: Settings, value: str) -> None:
    # No worker runs: a wait that were applied would last until its end.
    async with api_client(settings) as client, asyncio.timeout(5):
        response = await client.post("/v1/jobs", json=JOB, headers={"Prefer": f"wait={value}"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert "preference-applied" not in response.headers


async def test_a_wait_above_the_cap_is_applied_as_sixty_and_ends_with_the_job(
    settings: Settings,
) -> None:
    async with api_client(settings) as client, asyncio.timeout(20):
        waiting = asyncio.create_task(
            client.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=600"})
        )
        listed: list[dict[str, str]] = []
        while not listed and not waiting.done():
            listed = (await client.get("/v1/jobs")).json()["jobs"]
        cancelled = await client.post(f"/v1/jobs/{listed[0]['id']}/cancel")
        response = await waiting
    assert cancelled.status_code == 200
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=60"
    assert response.json()["status"] == "cancelled"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Server, int]]:
    """The API served by factq's own server in this loop, to see its request tasks."""
    async with factq_server(settings) as (server, address):
        yield server, int(address.rsplit(":", 1)[1])


async def test_a_client_that_hangs_up_ends_its_wait_within_a_second(
    served: tuple[Server, int],
) -> None:
    server, port = served
    body = json.dumps(JOB).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: factq\r\nContent-Type: application/json\r\n"
        b"Prefer: wait=30\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    # Once its job is listed the request is waiting on it (no worker runs).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def job_listed() -> bool:
            return bool((await http.get("/v1/jobs")).json()["jobs"])

        await until_true(job_listed)
    # Only the waiting request is in hand (the listing's requests are done).
    await until(lambda: len(server.server_state.tasks) == 1)
    writer.close()
    await writer.wait_closed()
    hung_up = time.monotonic()
    await until(lambda: not server.server_state.tasks)
    assert time.monotonic() - hung_up < 1.0


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_sigterm_answers_the_waits_in_progress_within_the_grace(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(shutdown_grace_s=5.0)
    answers: list[httpx.Response] = []
    with running_service(settings, tmp_path, workers=0) as service:
        api = service.processes["api"]

        def wait_for_a_job() -> None:
            answers.append(
                httpx.post(
                    f"{service.base_url}/v1/jobs",
                    json=JOB,
                    headers={"Prefer": "wait=60"},
                    timeout=30,
                )
            )

        streamed: list[str] = []
        stream_open = threading.Event()

        def follow_the_job(job_id: str) -> None:
            url = f"{service.base_url}/v1/jobs/{job_id}/events"
            with httpx.stream("GET", url, timeout=30) as response:
                for line in response.iter_lines():
                    streamed.append(line)
                    stream_open.set()

        waiting = threading.Thread(target=wait_for_a_job)
        waiting.start()
        # The job exists once the request waits on it.
        deadline = time.monotonic() + 10
        while not (listed := httpx.get(f"{service.base_url}/v1/jobs").json()["jobs"]):
            assert time.monotonic() < deadline, "the submission never arrived"
            time.sleep(0.02)
        # An event stream of the queued job is open too (its first event read).
        following = threading.Thread(target=follow_the_job, args=(listed[0]["id"],))
        following.start()
        assert stream_open.wait(10)
        signalled = time.monotonic()
        api.send_signal(signal.SIGTERM)
        code = api.wait(timeout=30)
        stopped_s = time.monotonic() - signalled
        waiting.join(timeout=10)
        following.join(timeout=10)
        assert not following.is_alive(), "the event stream was not ended"
    # uvicorn ends a graceful shutdown by re-raising the signal it caught.
    assert code in (0, -signal.SIGTERM), service.log_text()
    assert "Application shutdown complete" in service.log_text()
    assert stopped_s < settings.shutdown_grace_s
    assert [answer.status_code for answer in answers] == [202]
    assert answers[0].json()["status"] == "queued"
