"""Every line that `factq api`, `factq worker` and `factq dev` write is in factq's one format."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support import secrets_watch
from tests.support.backends import delete_namespace
from tests.support.service import free_port, running_service, start_dev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "key-for-the-log-format-test"
# `2025-01-31 12:00:00,123 INFO uvicorn.access: message`
LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S.*"
)


@pytest.fixture
def keyed_settings() -> Iterator[Settings]:
    settings = make_settings(api_keys=KEY)
    yield settings
    asyncio.run(delete_namespace(settings))


def odd_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not LINE.fullmatch(line)]


async def make_requests(base_url: str) -> None:
    """An access line with a 200, one with a 404, and a WebSocket with its key in the URL."""
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/no-such-page", headers=auth)).status_code == 404
        job = (
            await http.post(
                "/v1/jobs", json={"task": "factorial", "input": {"n": 10}}, headers=auth
            )
        ).json()
    ws = base_url.replace("http://", "ws://")
    async with websockets.connect(f"{ws}/v1/jobs/{job['id']}/events?token={KEY}") as socket:
        await socket.recv()


def test_api_and_worker_write_only_factq_lines(keyed_settings: Settings, tmp_path: Path) -> None:
    with running_service(keyed_settings, tmp_path) as service:
        asyncio.run(make_requests(service.base_url))
    api = (tmp_path / "api.log").read_text()
    worker = (tmp_path / "worker-0.log").read_text()
    assert odd_lines(api) == []
    assert odd_lines(worker) == []
    assert re.search(r' INFO uvicorn\.access: 127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200', api)
    assert re.search(r' INFO uvicorn\.access: .* "GET /no-such-page HTTP/1\.1" 404', api)
    assert re.search(r" INFO uvicorn\.error: Application startup complete\.", api)
    assert "token=[redacted]" in api and KEY not in api
    assert re.search(r" INFO \S+: ", worker), worker


def test_dev_writes_only_factq_lines(keyed_settings: Settings, tmp_path: Path) -> None:
    """`factq dev`'s own lines and those of the API and worker it starts, in one stream."""
    secrets_watch.log_dirs.add(tmp_path)
    port = free_port()
    log = tmp_path / "dev.log"
    dev = start_dev(keyed_settings, port, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", dev)
        asyncio.run(make_requests(f"http://127.0.0.1:{port}"))
    finally:
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=30) == 0
    text = log.read_text()
    assert odd_lines(text) == []
    assert re.search(r" INFO factq: dev: API on http://127\.0\.0\.1:\d+ ", text)
    assert re.search(r' INFO uvicorn\.access: .* "GET /no-such-page HTTP/1\.1" 404', text)


def wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until the API answers ready with a consumer behind it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"factq dev exited with {process.returncode}"
        try:
            answer = httpx.get(f"{base_url}/readyz", timeout=2)
            if answer.status_code == 200 and answer.json()["consumers"] >= 1:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"factq dev not ready in {timeout_s} s")
