"""Prometheus metrics of real `factq api` and `factq worker` processes: each series
says what the run did, and several API processes answer with their sum."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import Service, free_port, running_service
from tests.support.waiting import in_background, until, until_true, wait_for_jobs
from tests.support.webhook_receiver import serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "metrics-key-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
# Room for the run's submissions (at most 10), not for a batch of BATCH more.
RATE_LIMIT = "20/hour"
BATCH = 15

Key = tuple[str, frozenset[tuple[str, str]]]


def series(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


async def scrape(url: str) -> dict[Key, float]:
    """Every sample at url, parsed as Prometheus parses it (a new connection each time)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        series(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def settled(
    url: str, expected: Mapping[Key, float], timeout_s: float = 20.0
) -> dict[Key, float]:
    """The samples at url, once each expected series has its value."""
    found: dict[Key, float] = {}

    async def matches() -> bool:
        nonlocal found
        found = await scrape(url)
        return all(found.get(key) == value for key, value in expected.items())

    try:
        await until_true(matches, timeout_s=timeout_s)
    except AssertionError:
        wrong = {key: (found.get(key), value) for key, value in expected.items()}
        raise AssertionError(f"{url}: (found, expected) {wrong}") from None
    return found


@dataclass
class Receiver:
    """A webhook receiver that answers 500 to its first delivery, then 200."""

    url: str = ""
    requests: list[bytes] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        self.requests.append(await request.body())
        return Response(status_code=500 if len(self.requests) == 1 else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    port = free_port()
    state.url = f"http://127.0.0.1:{port}/hook"
    app = Starlette(routes=[Route("/hook", state.hook, methods=["POST"])])
    async with serving(app, port):
        yield state


@pytest.fixture
def metrics_settings() -> Iterator[Settings]:
    settings = make_settings(
        api_keys=KEY,
        rate_limit=RATE_LIMIT,
        max_body_bytes=2048,
        queue_max_length=2,
        # No worker serves `crash`: its jobs stay queued.
        worker_tasks="record,fail",
        webhook_secret=SECRET,
        webhook_allowed_hosts="127.0.0.1",
        webhook_retry_base_s=0.05,
    )
    yield settings
    asyncio.run(delete_namespace(settings))


@dataclass
class Scraped:
    service: Service
    worker_metrics: str

    @property
    def api_metrics(self) -> str:
        return f"{self.service.base_url}/metrics"


@pytest.fixture
def scraped(metrics_settings: Settings, tmp_path: Path) -> Iterator[Scraped]:
    port = free_port()
    with running_service(
        metrics_settings, tmp_path, worker_args=["--metrics-port", str(port)]
    ) as service:
        yield Scraped(service, f"http://127.0.0.1:{port}/metrics")


async def submit(http: httpx.AsyncClient, task: str, **job_input: Any) -> httpx.Response:
    return await http.post("/v1/jobs", json={"task": task, "input": job_input})


async def test_each_series_counts_what_the_run_did(
    scraped: Scraped, receiver: Receiver, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    api = scraped.service.base_url
    async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=30) as http:
        hooked = await http.post(
            "/v1/jobs",
            json={
                "task": "record",
                "input": {"tag": "r0", "log": log},
                "webhook": {"url": receiver.url},
            },
        )
        quick = [hooked] + [await submit(http, "record", tag=f"r{i}", log=log) for i in (1, 2)]
        quick += [await submit(http, "fail", message="no") for _ in range(2)]
        assert [response.status_code for response in quick] == [202] * 5
        await wait_for_jobs(http, [response.json()["id"] for response in quick])

        queued = await fill_the_queue(http, "crash", log=log)

        slow = (await submit(http, "record", tag="slow", log=log, sleep_s=5)).json()["id"]
        await follow_while_it_runs(scraped, http, slow)

        async with httpx.AsyncClient(base_url=api, timeout=30) as anonymous:
            assert (await submit(anonymous, "record", tag="x", log=log)).status_code == 401
        too_big = {"task": "record", "input": {"tag": "x", "log": "x" * 4000}}
        assert (await http.post("/v1/jobs", json=too_big)).status_code == 413
        batch = {"jobs": [{"task": "record", "input": {"tag": "x", "log": log}}] * BATCH}
        assert (await http.post("/v1/jobs/batch", json=batch)).status_code == 429
        cancelled = await http.post(f"/v1/jobs/{queued[0]}/cancel")
        assert cancelled.json()["status"] == "cancelled"

        ran = await wait_for_jobs(http, [*(response.json()["id"] for response in quick), slow])
    await settled(
        scraped.api_metrics,
        {
            series("factq_jobs_submitted_total", task="record"): 4,
            series("factq_jobs_submitted_total", task="fail"): 2,
            series("factq_jobs_submitted_total", task="crash"): len(queued),
            # The API ends the job it cancels while queued.
            series("factq_jobs_finished_total", task="crash", status="cancelled"): 1,
            series("factq_api_rejected_requests_total", status="401", reason="unauthorized"): 1,
            series(
                "factq_api_rejected_requests_total", status="413", reason="payload_too_large"
            ): 1,
            series("factq_api_rejected_requests_total", status="429", reason="rate_limited"): 1,
            series("factq_api_rejected_requests_total", status="503", reason="queue_full"): 1,
            # A cancelled job's message stays in the queue until a worker drops it.
            series("factq_queue_depth", task="crash"): len(queued),
            series("factq_queue_depth", task="record"): 0,
            series("factq_queue_consumers", task="record"): 1,
            series("factq_queue_consumers", task="crash"): 0,
            series("factq_api_open_streams", kind="websocket"): 0,
            series("factq_api_open_streams", kind="sse"): 0,
            series("factq_rabbitmq_reconnects_total"): 0,
        },
    )
    worker = await settled(
        scraped.worker_metrics,
        {
            series("factq_jobs_finished_total", task="record", status="succeeded"): 4,
            series("factq_jobs_finished_total", task="fail", status="failed"): 2,
            series("factq_job_run_seconds_count", task="record"): 4,
            series("factq_job_run_seconds_count", task="fail"): 2,
            series("factq_job_queue_wait_seconds_count", task="record"): 4,
            series("factq_job_queue_wait_seconds_count", task="fail"): 2,
            series("factq_worker_jobs_in_flight"): 0,
            series("factq_webhook_attempts_total", outcome="http_error"): 1,
            series("factq_webhook_attempts_total", outcome="success"): 1,
            series("factq_webhook_deliveries_total", outcome="delivered"): 1,
            series("factq_rabbitmq_reconnects_total"): 0,
        },
    )
    # The histograms hold the jobs' own timings (Redis's clock, as the jobs show them).
    records = [job for job in ran.values() if job["task"] == "record"]
    run_sum = worker[series("factq_job_run_seconds_sum", task="record")]
    assert run_sum == pytest.approx(sum(job["metrics"]["run_s"] for job in records), abs=1e-3)
    assert run_sum >= 5
    wait_sum = worker[series("factq_job_queue_wait_seconds_sum", task="record")]
    assert wait_sum == pytest.approx(sum(job["metrics"]["queue_s"] for job in records), abs=1e-3)
    assert worker[series("factq_job_run_seconds_bucket", task="record", le="+Inf")] == 4
    assert worker[series("factq_job_run_seconds_bucket", task="record", le="1.0")] == 3
    assert len(receiver.requests) == 2


async def fill_the_queue(http: httpx.AsyncClient, task: str, **job_input: Any) -> list[str]:
    """Submit jobs of a task no worker serves until its queue is full (a 503);
    the ids of those queued."""
    queued: list[str] = []
    # A quorum queue may take one message past its limit (see test_broker).
    for _ in range(4):
        response = await submit(http, task, **job_input)
        if response.status_code == 503:
            assert response.json()["error"]["type"] == "queue_full"
            assert 2 <= len(queued) <= 3
            return queued
        queued.append(response.json()["id"])
    raise AssertionError(f"the queue took {len(queued)} jobs past its length of 2")


async def follow_while_it_runs(scraped: Scraped, http: httpx.AsyncClient, job_id: str) -> None:
    """Follow the running job on a WebSocket and an SSE stream: each counts as
    open while it is, and the worker holds the job meanwhile."""
    ws_url = scraped.service.base_url.replace("http://", "ws://") + f"/v1/jobs/{job_id}/events"

    async def on_socket() -> list[dict[str, Any]]:
        async with websockets.connect(ws_url, additional_headers=AUTH) as socket:
            return [json.loads(message) async for message in socket]

    async def on_sse() -> list[str]:
        async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            return [line async for line in stream.aiter_lines() if line.startswith("data: ")]

    async with in_background(on_socket()) as socket, in_background(on_sse()) as sse:
        await settled(
            scraped.api_metrics,
            {
                series("factq_api_open_streams", kind="websocket"): 1,
                series("factq_api_open_streams", kind="sse"): 1,
            },
        )
        await settled(scraped.worker_metrics, {series("factq_worker_jobs_in_flight"): 1})
        events = await asyncio.wait_for(socket, 30)
        lines = await asyncio.wait_for(sse, 30)
    assert events[-1]["job"]["status"] == "succeeded"
    assert json.loads(lines[-1][len("data: ") :])["job"]["status"] == "succeeded"
    await settled(
        scraped.api_metrics,
        {
            series("factq_api_open_streams", kind="websocket"): 0,
            series("factq_api_open_streams", kind="sse"): 0,
        },
    )


def api_children(parent: int) -> set[int]:
    """The API processes `factq api --workers N` spawned (not multiprocessing's helpers)."""
    path = Path(f"/proc/{parent}/task/{parent}/children")
    children = {int(child) for child in path.read_text().split()} if path.exists() else set()
    return {child for child in children if b"spawn_main" in _read(f"/proc/{child}/cmdline")}


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def is_directory(path: str) -> bool:
    return Path(path).is_dir()


def metrics_directory(pid: int) -> str:
    """The PROMETHEUS_MULTIPROC_DIR an API process was started with."""
    for entry in _read(f"/proc/{pid}/environ").split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return value.decode()
    raise AssertionError(f"API process {pid} has no PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def two_process_settings() -> Iterator[Settings]:
    settings = make_settings(api_workers=2, worker_tasks="record")
    yield settings
    asyncio.run(delete_namespace(settings))


async def test_each_api_process_answers_the_sum_of_all(
    two_process_settings: Settings, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    with running_service(two_process_settings, tmp_path) as service:
        url = f"{service.base_url}/metrics"
        parent = service.processes["api"].pid
        await until(lambda: len(api_children(parent)) == 2)
        directory = metrics_directory(min(api_children(parent)))
        # A new connection per request: either process may take each.
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
            first = [
                await submit_alone(service.base_url, "record", tag=f"a{i}", log=log)
                for i in range(6)
            ]
            await wait_for_jobs(http, first)
            # No worker serves `crash`: its job stays queued, its stream open.
            waiting = await submit_alone(service.base_url, "crash", log=log)

            async def follow() -> None:
                async with http.stream("GET", f"/v1/jobs/{waiting}/events") as stream:
                    async for _ in stream.aiter_lines():
                        pass

            async with in_background(follow()):
                await settled(url, {series("factq_api_open_streams", kind="sse"): 1})
                # Replace both processes: neither of those left served any request
                # above, and the one that held the stream is gone.
                for child in sorted(api_children(parent)):
                    await replaced(parent, child)
            expected = {
                series("factq_jobs_submitted_total", task="record"): 6,
                series("factq_jobs_submitted_total", task="crash"): 1,
                series("factq_api_open_streams", kind="sse"): 0,
            }
            await settled(url, expected, timeout_s=30)
            for _ in range(4):
                found = await scrape(url)
                assert all(found.get(key) == value for key, value in expected.items()), found
            more = [
                await submit_alone(service.base_url, "record", tag=f"b{i}", log=log)
                for i in range(6)
            ]
            await wait_for_jobs(http, more)
            for _ in range(6):
                found = await scrape(url)
                assert found.get(series("factq_jobs_submitted_total", task="record")) == 12
        assert is_directory(directory)
    # Made for this run of `factq api`, and removed with it.
    assert not is_directory(directory)


async def replaced(parent: int, child: int) -> None:
    """SIGKILL one API process; return once its parent has started another."""
    os.kill(child, signal.SIGKILL)

    def has_two_again() -> bool:
        children = api_children(parent)
        return child not in children and len(children) == 2

    await until(has_two_again, timeout_s=30)


async def submit_alone(base_url: str, task: str, **job_input: Any) -> str:
    """Submit on a connection of its own; the job's id."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await submit(http, task, **job_input)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id
