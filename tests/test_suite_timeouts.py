"""A test that hangs fails alone: cancelled inside its event loop (see
`tests.support.timeouts`), it leaves no coroutine or connection behind to fail
the next test, which runs with warnings as errors as this suite does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from factq.settings import Settings
from tests.support.service import ROOT

SUITE = """
import asyncio
import gc
import os

import pytest
import redis.asyncio as redis


@pytest.mark.timeout(5)
async def test_hangs_in_a_blocking_redis_command():
    async with redis.Redis.from_url(os.environ["SUITE_REDIS_URL"]) as client:
        await client.blpop([os.environ["SUITE_KEY"]], timeout=0)


async def test_the_next_one_passes():
    gc.collect()
    await asyncio.sleep(0)
"""

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
timeout = 60
filterwarnings = error
"""


def test_a_hung_async_test_fails_alone(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "test_hang.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text(INI)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SUITE_REDIS_URL": settings.redis_url.get_secret_value(),
        "SUITE_KEY": f"{settings.namespace}:never",
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.timeouts", "-q", "-rA", "-p",
         "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert "FAILED test_hang.py::test_hangs_in_a_blocking_redis_command" in out, out
    assert "timed out after 4 s (cancelled inside its event loop)" in out, out
    assert "PASSED test_hang.py::test_the_next_one_passes" in out, out
    assert "1 failed, 1 passed" in out, out
