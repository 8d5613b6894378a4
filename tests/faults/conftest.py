"""Fixtures of the fault suite: a private Redis that can be killed, and settings
pointing at it, in a namespace of their own on the shared RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_queues
from tests.support.redis_server import RedisServer, redis_server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """`redis-server --appendonly yes --appendfsync always` on a free port, killed after."""
    for tool in ("redis-server", "rabbitmqctl"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.skip(f"the fault suite needs {tool} on this machine")
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def fault_settings(private_redis: RedisServer) -> Iterator[Settings]:
    settings = make_settings(redis_url=private_redis.url, shutdown_grace_s=2.0)
    yield settings
    # The private Redis goes with its directory; the shared RabbitMQ keeps nothing.
    asyncio.run(delete_queues(settings))
