"""End to end, live: several API and worker processes, events and cancels across them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gmpy2
import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.support.service import Service, running_service
from tests.support.tasks import executions_by_worker
from tests.support.waiting import until, wait_for_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(e2e_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """Two API processes and two worker processes sharing one namespace."""
    with running_service(e2e_settings, tmp_path, workers=2, apis=2) as service:
        yield service


async def test_a_job_submitted_on_one_api_is_followed_live_on_the_other(cluster: Service) -> None:
    first, second = cluster.base_urls
    ws_second = second.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=first) as http:
        response = await http.post(
            "/v1/jobs", json={"task": "factorial", "input": {"n": 1_000_000}}
        )
    job_id = response.json()["id"]
    events: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(60),
        websockets.connect(f"{ws_second}/v1/jobs/{job_id}/events") as socket,
    ):
        async for message in socket:
            events.append(json.loads(message))
    assert socket.close_code == 1000
    statuses = [event["job"]["status"] for event in events]
    assert statuses[-1] == "succeeded"
    # Followed live: the running job's progress came as it happened.
    assert "running" in statuses
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    async with httpx.AsyncClient(base_url=second, timeout=30) as http:
        value = await http.get(f"/v1/jobs/{job_id}/result", params={"format": "hex"})
    assert gmpy2.mpz(value.text, 16) == gmpy2.fac(1_000_000)


async def test_sse_from_another_api_follows_a_job_to_its_end(cluster: Service) -> None:
    first, second = cluster.base_urls
    async with httpx.AsyncClient(base_url=first) as http:
        response = await http.post("/v1/jobs", json={"task": "factorial", "input": {"n": 500_000}})
    job_id = response.json()["id"]
    lines: list[str] = []
    url = f"{second}/v1/jobs/{job_id}/events"
    async with httpx.AsyncClient(timeout=60) as http, http.stream("GET", url) as stream:
        async for line in stream.aiter_lines():
            lines.append(line)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert data[-1]["job"]["status"] == "succeeded"
    assert ids == [event["seq"] for event in data]


async def test_cancel_with_two_workers_then_both_keep_computing(
    cluster: Service, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    api = cluster.base_urls[1]

    def record(tag: str, sleep_s: float = 0.0) -> dict[str, Any]:
        return {"task": "record", "input": {"tag": tag, "log": log, "sleep_s": sleep_s}}

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        # Four long jobs fill both workers' two pool slots each; the fifth waits.
        batch = [record(f"long-{i}", 30) for i in range(4)] + [record("queued")]
        jobs = (await http.post("/v1/jobs/batch", json={"jobs": batch})).json()["jobs"]
        await until(lambda: len(executions_by_worker(log)) == 4, timeout_s=20)
        queued = (await http.post(f"/v1/jobs/{jobs[4]['id']}/cancel")).json()
        running = [(await http.post(f"/v1/jobs/{job['id']}/cancel")).json() for job in jobs[:4]]
        cancelled = await wait_for_jobs(http, [job["id"] for job in jobs], timeout_s=20)
        after = [record(f"after-{i}") for i in range(40)]
        ids = [
            job["id"]
            for job in (await http.post("/v1/jobs/batch", json={"jobs": after})).json()["jobs"]
        ]
        done = await wait_for_jobs(http, ids, timeout_s=60)
    assert queued["status"] == "cancelled"
    assert all(job["status"] == "running" and job["cancel_requested"] for job in running)
    assert Counter(job["status"] for job in cancelled.values()) == {"cancelled": 5}
    runs = executions_by_worker(log)
    assert "queued" not in {tag for tag, _, _ in runs}, "a cancelled queued job must never run"
    assert len({worker for tag, _, worker in runs if tag.startswith("long")}) == 2
    assert Counter(job["status"] for job in done.values()) == {"succeeded": 40}
    assert len({worker for tag, _, worker in runs if tag.startswith("after")}) == 2
