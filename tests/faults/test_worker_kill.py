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
from tests.support.tasks import executions, executions_by_worker

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


def test_twins_of_a_job_whose_worker_was_killed_mid_computation_all_succeed(
    fault_settings: Settings, private_redis: RedisServer, tmp_path: Path
) -> None:
    """Identical deterministic jobs share one computation. SIGKILL the worker
    computing it while a twin waits on another worker: the lease runs out, the
    twin computes, and every one of them succeeds, computed twice in all."""
    log = str(tmp_path / "executions.log")
    body = {"task": "memo", "input": {"tag": "shared", "log": log, "sleep_s": 3}}
    with (
        running_service(fault_settings, tmp_path, workers=2, concurrency=1) as service,
        httpx.Client(base_url=service.base_url, timeout=10) as http,
    ):
        first = http.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 30
        while not executions_by_worker(log):
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.02)
        [(_, _, forkserver)] = executions_by_worker(log)
        leader = next(
            name
            for name, process in service.processes.items()
            if forkserver in {proc.pid for proc in descendants(process.pid)}
        )
        twins = [http.post("/v1/jobs", json=body).json()["id"] for _ in range(3)]
        while not any(http.get(f"/v1/jobs/{twin}").json()["status"] == "running" for twin in twins):
            assert time.monotonic() < deadline, "no twin waits on the computation"
            time.sleep(0.02)
        service.kill(leader)
        jobs: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 60
        while len(jobs) < 4:
            assert time.monotonic() < deadline, f"only {len(jobs)} of 4 jobs finished"
            for job_id in [first, *twins]:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    jobs[job_id] = job
            time.sleep(0.1)
        results = {http.get(f"/v1/jobs/{job_id}/result").text for job_id in jobs}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    assert results == {"shared"}
    runs = executions_by_worker(log)
    assert len(runs) == 2, runs
    assert runs[1][2] != forkserver
