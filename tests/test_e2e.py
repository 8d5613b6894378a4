"""End to end: `factq api` and `factq worker` processes, real Redis and RabbitMQ, HTTP only."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gmpy2
import httpx
import pytest

from factq.settings import Settings
from tests.support.service import Service, running_service
from tests.support.tasks import executions_by_worker
from tests.support.waiting import wait_for_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def service(e2e_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    with running_service(e2e_settings, tmp_path, workers=1) as service:
        yield service


@pytest.fixture
def two_workers(e2e_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    with running_service(e2e_settings, tmp_path, workers=2) as service:
        yield service


@pytest.fixture
async def http(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


async def poll_compat(
    http: httpx.AsyncClient, job_id: str, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state: dict[str, Any] = (await http.get("/factorial/result", params={"id": job_id})).json()
        if state["status"] != "processing":
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} still processing after {timeout_s} s")


async def test_the_original_routes_compute_150000_factorial_exactly(
    http: httpx.AsyncClient,
) -> None:
    submitted = await http.get("/factorial", params={"no": "150000"})
    assert submitted.status_code == 200
    state = await poll_compat(http, submitted.text)
    assert state["status"] == "done"
    assert state["input"] == 150000
    expected = gmpy2.fac(150000).digits()
    assert len(state["output"]) == 711_273
    assert state["output"] == expected


async def test_the_v1_routes_compute_and_stream_the_result(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/jobs", json={"task": "factorial", "input": {"n": 150000}})
    assert response.status_code == 202
    job = (await wait_for_jobs(http, [response.json()["id"]]))[response.json()["id"]]
    assert job["status"] == "succeeded"
    expected = gmpy2.fac(150000)
    decimal = await http.get(job["result"]["url"])
    assert decimal.content == expected.digits().encode()
    hexadecimal = await http.get(job["result"]["url"], params={"format": "hex"})
    assert gmpy2.mpz(hexadecimal.text, 16) == expected


async def test_a_batch_of_1000_small_jobs_all_succeed_correctly(http: httpx.AsyncClient) -> None:
    body = {"jobs": [{"task": "factorial", "input": {"n": n}} for n in range(1000)]}
    response = await http.post("/v1/jobs/batch", json=body)
    assert response.status_code == 202
    ids = [job["id"] for job in response.json()["jobs"]]
    assert len(set(ids)) == 1000
    jobs = await wait_for_jobs(http, ids, timeout_s=120)
    assert Counter(job["status"] for job in jobs.values()) == {"succeeded": 1000}
    limit = asyncio.Semaphore(20)

    async def value(job_id: str) -> bytes:
        async with limit:
            return (await http.get(f"/v1/jobs/{job_id}/result")).content

    values = await asyncio.gather(*(value(job_id) for job_id in ids))
    for n, (job_id, got) in enumerate(zip(ids, values, strict=True)):
        assert got == gmpy2.fac(n).digits().encode(), f"wrong value for {n}! in job {job_id}"
        assert jobs[job_id]["result"]["digits"] == len(got)


async def test_bad_requests_never_reach_the_queue_and_the_service_keeps_serving(
    http: httpx.AsyncClient,
) -> None:
    bad = [
        ("/v1/jobs", {"task": "factorial", "input": {"n": -1}}, 422),
        ("/v1/jobs", {"task": "factorial", "input": {"n": "150000"}}, 422),
        ("/v1/jobs", {"task": "nope", "input": {"n": 1}}, 422),
    ]
    for path, body, code in bad:
        assert (await http.post(path, json=body)).status_code == code
    assert (await http.get("/factorial", params={"no": "abc"})).status_code == 400
    assert (await http.get("/readyz")).json()["queue_depth"] == 0
    ok = await http.get("/factorial", params={"no": "10"})
    assert (await poll_compat(http, ok.text))["output"] == "3628800"


async def test_two_workers_share_the_queue_and_run_each_job_once(
    two_workers: Service, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    tags = [f"job-{i}" for i in range(200)]
    body = {
        "jobs": [{"task": "record", "input": {"tag": t, "log": log, "sleep_s": 0.01}} for t in tags]
    }
    async with httpx.AsyncClient(base_url=two_workers.base_url, timeout=30) as http:
        response = await http.post("/v1/jobs/batch", json=body)
        assert response.status_code == 202
        ids = [job["id"] for job in response.json()["jobs"]]
        jobs = await wait_for_jobs(http, ids, timeout_s=120)
    assert all(job["status"] == "succeeded" and job["attempts"] == 1 for job in jobs.values())
    runs = executions_by_worker(log)
    assert Counter(tag for tag, _, _ in runs) == Counter(tags), "a job ran twice or never"
    assert len({worker for _, _, worker in runs}) == 2, "both workers should have taken jobs"


def test_sigterm_stops_the_api_and_the_worker_cleanly(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    with running_service(e2e_settings, tmp_path) as service:
        assert httpx.get(f"{service.base_url}/healthz").status_code == 200
    logs = service.log_text()
    assert service.processes["worker-0"].returncode == 0, logs
    # uvicorn shuts down, then re-raises the signal so the exit status shows it.
    assert service.processes["api"].returncode in (0, -signal.SIGTERM), logs
    assert "Application shutdown complete" in logs
    assert "Traceback" not in logs
