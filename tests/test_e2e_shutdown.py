"""SIGTERM on a worker process: it stops taking jobs, finishes the one it holds, exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_namespace, queue_depth
from tests.support.service import environment, running_service
from tests.support.tasks import executions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def e2e_settings() -> Iterator[Settings]:
    settings = make_settings(shutdown_grace_s=20.0)
    yield settings
    asyncio.run(delete_namespace(settings))


def test_sigterm_drains_the_job_in_hand(e2e_settings: Settings, tmp_path: Path) -> None:
    log = str(tmp_path / "executions.log")
    worker_log = tmp_path / "worker.log"
    with running_service(e2e_settings, tmp_path, workers=0) as service:
        with open(worker_log, "wb") as output:
            worker = subprocess.Popen(
                [sys.executable, "-m", "factq", "worker", "--concurrency", "1"],
                env=environment(e2e_settings),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            body = {
                "jobs": [
                    {"task": "record", "input": {"tag": "held", "log": log, "sleep_s": 1.5}},
                    {"task": "record", "input": {"tag": "waiting", "log": log}},
                ]
            }
            ids = [
                j["id"]
                for j in httpx.post(f"{service.base_url}/v1/jobs/batch", json=body).json()["jobs"]
            ]
            deadline = time.monotonic() + 30
            while not executions(log):
                assert time.monotonic() < deadline, worker_log.read_text()
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        held = httpx.get(f"{service.base_url}/v1/jobs/{ids[0]}").json()
        waiting = httpx.get(f"{service.base_url}/v1/jobs/{ids[1]}").json()
    assert code == 0, worker_log.read_text()
    assert held["status"] == "succeeded"
    # The next job was never taken (prefetch = its one pool slot): still queued.
    assert waiting["status"] == "queued"
    assert [tag for tag, _ in executions(log)] == ["held"]
    assert asyncio.run(queue_depth(e2e_settings)) == 1
    assert "Traceback" not in worker_log.read_text()
