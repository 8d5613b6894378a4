"""The API answers as soon as Redis is back after a restart: no request fails on a
pooled connection that the restart left stale."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from tests.support.redis_server import RedisServer
from tests.support.service import running_service

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

READS = 20


async def test_reads_succeed_as_soon_as_redis_is_back(
    fault_settings: Settings, private_redis: RedisServer, tmp_path: Path
) -> None:
    with running_service(fault_settings, tmp_path, workers=0) as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as http:
            submitted = await http.post(
                "/v1/jobs", json={"task": "fail", "input": {"message": "never run"}}
            )
            path = f"/v1/jobs/{submitted.json()['id']}"

            async def read_at_once() -> list[int]:
                answers = await asyncio.gather(*(http.get(path) for _ in range(READS)))
                return [answer.status_code for answer in answers]

            # Many reads at once: the API's pool holds as many connections.
            assert await read_at_once() == [200] * READS
            await asyncio.to_thread(private_redis.kill)
            # The killed server's sockets were closed by the kernel before it
            # was started again: each pooled connection of the API is at its end.
            await asyncio.to_thread(private_redis.start)
            answers = await read_at_once()
            assert answers == [200] * READS, f"{answers.count(503)} of {READS} reads got a 503"
