"""Fixtures of the cluster tests: a Redis Cluster (three masters, three replicas) and a
RabbitMQ cluster (three nodes) on loopback, started once per session and torn down at
its end (see tests.support.clusters). Every test here carries the `cluster` marker.

The first test to use a fixture pays for its start in its own timeout: about 6 s for
Redis, 35 s for RabbitMQ. A test that fails a node brings it back before it ends, so
that the next test finds the whole cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import clusters

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)


def _unavailable(reason: str) -> NoReturn:
    """Skip, but fail on CI, where a skipped cluster test would pass unseen."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and the cluster tests cannot run here: {reason}")
    pytest.skip(f"the cluster tests cannot run here: {reason}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[clusters.RedisCluster]:
    """A Redis Cluster of three masters and three replicas on free loopback ports."""
    reason = clusters.missing_redis()
    if reason is not None:
        _unavailable(reason)
    with clusters.redis_cluster() as cluster:
        print(f"\nRedis Cluster up in {cluster.started_in_s:.1f} s: {cluster.ports}")
        yield cluster


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[clusters.RabbitCluster]:
    """A RabbitMQ cluster of three nodes, each on a free loopback port."""
    reason = clusters.missing_rabbitmq()
    if reason is not None:
        _unavailable(reason)
    with clusters.rabbit_cluster() as cluster:
        print(f"\nRabbitMQ cluster up in {cluster.started_in_s:.1f} s: {cluster.urls}")
        yield cluster
