"""A worker killed with SIGKILL takes its pool processes with it: the job they ran
stops at once (its message goes back to the queue for another worker), instead of
running on as an orphan beside the replacement worker."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from tests.support.procs import descendants, kill_all, wait_gone
from tests.support.redis_server import RedisServer
from tests.support.service import running_service
from tests.support.tasks import executions

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_a_killed_workers_pool_processes_end_with_it(
    fault_settings: Settings, private_redis: RedisServer, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    with running_service(fault_settings, tmp_path, workers=1, concurrency=2) as service:
        body = {"task": "record", "input": {"tag": "long", "log": log, "sleep_s": 30}}
        assert httpx.post(f"{service.base_url}/v1/jobs", json=body).status_code == 202
        deadline = time.monotonic() + 30
        while not executions(log):
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.02)
        worker = service.processes["worker-0"]
        tree = descendants(worker.pid)
        # The forkserver and its two pool processes, and multiprocessing's resource tracker.
        assert len(tree) >= 3, tree
        service.kill("worker-0")
        alive = wait_gone(tree, 2.0)
        kill_all(alive)
        assert not alive, f"{len(alive)} of {len(tree)} processes outlived their worker"
