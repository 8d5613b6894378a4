"""A RabbitMQ restart neither aborts nor repeats the jobs a worker is running: they
finish and store their outcome; the copies RabbitMQ delivers again find them done."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from tests.faults.chaos import ensure_rabbitmq_running, rabbitmqctl
from tests.support.redis_server import RedisServer
from tests.support.service import running_service
from tests.support.tasks import executions
from tests.support.waiting import until, wait_for_jobs

pytestmark = [pytest.mark.faults, pytest.mark.alone, pytest.mark.timeout(180)]

# Longer than RabbitMQ's stop and start plus aio-pika's 5 s before it reconnects:
# the job still runs when its message comes back, to the same (only) worker.
LONG_S = 15.0
# Ends while RabbitMQ is down.
SHORT_S = 1.5


async def test_jobs_running_through_a_rabbitmq_restart_run_once(
    fault_settings: Settings, private_redis: RedisServer, tmp_path: Path
) -> None:
    log = str(tmp_path / "executions.log")
    with running_service(fault_settings, tmp_path, workers=1, concurrency=2) as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as http:
            body = {
                "jobs": [
                    {"task": "record", "input": {"tag": tag, "log": log, "sleep_s": sleep_s}}
                    for tag, sleep_s in (("long", LONG_S), ("short", SHORT_S))
                ]
            }
            response = await http.post("/v1/jobs/batch", json=body)
            assert response.status_code == 202, response.text
            job_ids = [job["id"] for job in response.json()["jobs"]]
            await until(lambda: len(executions(log)) == 2)
            stopped = time.monotonic()
            try:
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                await asyncio.sleep(1)
            finally:
                await asyncio.to_thread(ensure_rabbitmq_running)
            jobs = await wait_for_jobs(http, job_ids, timeout_s=LONG_S + 30)
            reconnected = time.monotonic() - stopped
            runs = Counter(tag for tag, _ in executions(log))
            assert [jobs[job_id]["status"] for job_id in job_ids] == ["succeeded"] * 2, jobs
            assert runs == {"long": 1, "short": 1}, (
                f"ran {dict(runs)} times (RabbitMQ back after {reconnected:.1f} s)\n"
                + service.log_text()
            )
            assert [jobs[job_id]["attempts"] for job_id in job_ids] == [1, 1]
            # And the worker takes new jobs again.
            item = {"task": "record", "input": {"tag": "after", "log": log, "sleep_s": 0}}
            after = await http.post("/v1/jobs", json=item, headers={"Prefer": "wait=30"})
            assert after.json()["status"] == "succeeded", after.text
