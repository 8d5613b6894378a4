"""With FACTQ_LOG_FORMAT=json, every line of `factq api` and `factq worker` is a
JSON object, and one grep of a job's id, or of its request's, follows the job
through both processes: its submission, its run, its end."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support import secrets_watch
from tests.support.backends import delete_namespace
from tests.support.service import free_port, running_service, start_dev
from tests.support.waiting import until, until_true, wait_for_jobs
from tests.support.webhook_receiver import Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "k3y-of-the-json-log-test"
TOKEN = "w0rker-t0ken-of-the-json-log-test"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-secret-of-the-json-logs").decode()
HOOK_PASSWORD = "h00k-passw0rd-of-the-json-log-test"
HOOK_TOKEN = "h00k-t0ken-of-the-json-log-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GENERATED = re.compile(r"[0-9a-f]{32}")
# The jobs the test submits, by name, and their tasks.
TASKS = {
    "given": "factorial",
    "new": "factorial",
    "refused": "factorial",
    "failing": "fail",
    "crashing": "crash",
}


@pytest.fixture
def json_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(
        log_format="json",
        api_keys=KEY,
        worker_token=TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts="127.0.0.1",
        # A crashing job is given back once, then fails as worker_lost.
        max_attempts=2,
    )
    secrets_watch.remember_values(HOOK_PASSWORD, HOOK_TOKEN)
    yield settings
    asyncio.run(delete_namespace(settings))


def parsed(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output, each of which must be a factq JSON line."""
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {text!r}") from None
        assert isinstance(line, dict), f"{path.name}:{number}: {text!r}"
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        assert TIME.fullmatch(line["time"]), text
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, text
        lines.append(line)
    return lines


def about(lines: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("job_id") == job_id]


async def submit(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> tuple[str, str]:
    """The job's id, and the request id the answer carries."""
    response = await http.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"], response.headers["x-request-id"]


async def use_the_service(base_url: str, hook_port: int, tmp_path: Path) -> dict[str, Any]:
    """Jobs submitted with and without a request id, one that fails and one
    whose process dies; a socket and the internal route, with their secrets."""
    hook = f"http://hooks:{HOOK_PASSWORD}@127.0.0.1:{hook_port}/hook?token={HOOK_TOKEN}"
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=AUTH) as http:
        factorial = {"task": "factorial", "input": {"n": 20}, "webhook": {"url": hook}}
        seen["given"] = await submit(http, factorial, **{"X-Request-ID": "req-given.1:a"})
        seen["new"] = await submit(http, {"task": "factorial", "input": {"n": 21}})
        seen["refused"] = await submit(
            http, {"task": "factorial", "input": {"n": 22}}, **{"X-Request-ID": "no spaces"}
        )
        seen["failing"] = await submit(
            http, {"task": "fail", "input": {"message": "as asked"}}, **{"X-Request-ID": "req-f"}
        )
        crash = {"task": "crash", "input": {"log": str(tmp_path / "crashes.log")}}
        seen["crashing"] = await submit(http, crash, **{"X-Request-ID": "req-c"})
        missing = await http.get("/v1/jobs/" + "0" * 32, headers={"X-Request-ID": "req-404"})
        seen["404"] = missing.status_code, missing.headers["x-request-id"]
        internal = await http.post(
            "/factorial/update",
            json={"id": "0" * 32, "status": "processing"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        seen["internal"] = internal.headers["x-request-id"]
        seen["jobs"] = await wait_for_jobs(http, [seen[name][0] for name in TASKS], timeout_s=60)
        given = f"/v1/jobs/{seen['given'][0]}"
        await until_delivered(http, given)
    ws = base_url.replace("http://", "ws://")
    url = f"{ws}/v1/jobs/{seen['given'][0]}/events?token={KEY}"
    async with websockets.connect(url, additional_headers={"X-Request-ID": "req-ws"}) as socket:
        await socket.recv()
        assert socket.response is not None
        seen["ws"] = socket.response.headers["X-Request-ID"]
    return seen


async def until_delivered(http: httpx.AsyncClient, path: str) -> None:
    async def delivered() -> bool:
        return bool((await http.get(path)).json()["webhook"]["deliveries"])

    deadline = asyncio.get_running_loop().time() + 30
    while not await delivered():
        assert asyncio.get_running_loop().time() < deadline, "the webhook was never delivered"
        await asyncio.sleep(0.05)


def ended(worker_log: Path, job_ids: list[str]) -> bool:
    """Whether the worker has written each job's last line (written as the job
    ends, so possibly after a client saw it end)."""
    text = worker_log.read_text()
    return all(re.search(rf"job {job_id} (succeeded|failed)", text) for job_id in job_ids)


def test_one_grep_follows_a_job_through_the_api_and_the_worker(
    json_settings: Settings, tmp_path: Path
) -> None:
    with receiving() as hook_port, running_service(json_settings, tmp_path) as service:
        seen = asyncio.run(use_the_service(service.base_url, hook_port, tmp_path))
        job_ids = [seen[name][0] for name in TASKS]
        asyncio.run(until(lambda: ended(tmp_path / "worker-0.log", job_ids), timeout_s=15))
    api_text = (tmp_path / "api.log").read_text()
    worker_text = (tmp_path / "worker-0.log").read_text()
    api, worker = parsed(tmp_path / "api.log"), parsed(tmp_path / "worker-0.log")

    # The id the caller gave comes back, and a new one where it gave none or a bad one.
    given_job, given_request = seen["given"]
    assert given_request == "req-given.1:a"
    assert GENERATED.fullmatch(seen["new"][1]) and GENERATED.fullmatch(seen["refused"][1])
    assert seen["404"] == (404, "req-404") and GENERATED.fullmatch(seen["internal"])
    assert seen["ws"] == "req-ws"

    # grep <job id>: the submission in the API's lines, the run in the worker's,
    # each with the request's id; grep <request id> finds them both.
    for name, task in TASKS.items():
        job_id, request_id = seen[name]
        assert job_id in api_text and job_id in worker_text
        assert request_id in api_text and request_id in worker_text
        submitted = about(api, job_id)
        assert f"job {job_id} queued: {task}" in [line["message"] for line in submitted]
        assert all(line["request_id"] == request_id for line in submitted)
        ran = [line for line in about(worker, job_id) if "HTTP Request" not in line["message"]]
        assert f"job {job_id} started: {task}" in [line["message"] for line in ran]
        assert all(line["request_id"] == request_id for line in ran), ran
    # The API's access line of the submission is the request's too.
    access = [line for line in api if line["logger"] == "uvicorn.access"]
    assert any(
        '"POST /v1/jobs HTTP/1.1" 202' in line["message"] and line["request_id"] == given_request
        for line in access
    )
    # uvicorn's line of the socket's handshake (on uvicorn.error) too.
    assert any(
        "WebSocket /v1/jobs/" in line["message"] and line.get("request_id") == "req-ws"
        for line in api
    )

    # How each job ended, in the worker's lines about it.
    assert f"job {given_job} succeeded" in [line["message"] for line in about(worker, given_job)]
    failing_job = seen["failing"][0]
    failed = [line for line in about(worker, failing_job) if "failed" in line["message"]]
    assert failed[0]["level"] == "WARNING"
    assert failed[0]["message"] == f"job {failing_job} failed: task_error: ValueError: as asked"
    crashing_job = seen["crashing"][0]
    crashed = [line["message"] for line in about(worker, crashing_job)]
    assert any("returning it to the queue" in message for message in crashed), crashed
    assert crashed[-1].startswith(f"job {crashing_job} failed: worker_lost"), crashed
    assert seen["jobs"][crashing_job]["error"]["type"] == "worker_lost"
    # The webhook's delivery line is about its job.
    delivery = [line for line in worker if line["message"].startswith("HTTP Request: POST")]
    assert delivery and delivery[0]["job_id"] == given_job

    # No secret in either process's lines, the URLs' credentials masked.
    assert "token=[redacted]" in api_text
    assert "http://***@127.0.0.1" in worker_text
    for secret in (KEY, TOKEN, "guest:guest", HOOK_PASSWORD, HOOK_TOKEN, WEBHOOK_SECRET):
        assert secret not in api_text and secret not in worker_text
    assert Receiver.received, "the webhook was delivered"


def test_factq_dev_and_its_processes_write_json_lines(tmp_path: Path) -> None:
    """`factq dev`'s own lines, and those of the API processes and the worker it starts."""
    settings = make_settings(log_format="json", api_workers=2)
    secrets_watch.log_dirs.add(tmp_path)
    port = free_port()
    log = tmp_path / "dev.log"
    dev = start_dev(settings, port, log)
    try:
        job_id = asyncio.run(run_one_job(f"http://127.0.0.1:{port}", dev, log))
    finally:
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=30) == 0
        asyncio.run(delete_namespace(settings))
    lines = parsed(log)
    assert any(line["logger"] == "factq" and line["message"].startswith("dev: ") for line in lines)
    assert (
        len({line["message"] for line in lines if "Started server process" in line["message"]}) == 2
    )
    assert {line["request_id"] for line in about(lines, job_id)} == {"req-dev"}
    assert {line["logger"] for line in about(lines, job_id)} >= {
        "factq.submit",
        "factq.worker.runner",
    }


async def run_one_job(base_url: str, dev: subprocess.Popen[bytes], log: Path) -> str:
    """Once `factq dev` serves, one job run through it, and its worker's last line written."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:

        async def ready() -> bool:
            assert dev.poll() is None, f"factq dev exited with {dev.returncode}"
            try:
                answer = await http.get("/readyz")
            except httpx.HTTPError:
                return False
            return answer.status_code == 200 and answer.json()["consumers"] >= 1

        await until_true(ready, timeout_s=30)
        job_id, _ = await submit(
            http, {"task": "factorial", "input": {"n": 5}}, **{"X-Request-ID": "req-dev"}
        )
        await wait_for_jobs(http, [job_id])
    await until(lambda: f"job {job_id} succeeded" in log.read_text(), timeout_s=15)
    # Both API processes up before the stop, so that both have lines to check.
    await until(lambda: log.read_text().count("Started server process") == 2, timeout_s=30)
    return job_id
