"""The suite on several processes at once (pytest-xdist: scripts/test.sh runs
`pytest -n 2`).

Every test has a namespace of its own on the shared Redis and RabbitMQ, so
tests run side by side, except:

- A test marked `alone` restarts the shared RabbitMQ: it runs while no other
  test of the run does. Each test holds a lock on a file of the run for as
  long as it runs, fixtures included: shared, or exclusive for an `alone`
  test. The lock is taken before the test's time limit starts counting.
- Tests that share a costly fixture wider than one test (the cluster tests'
  clusters, the embed tests' model) are sent to one process together, which
  makes the fixture once; every other test goes, one at a time, to whichever
  process is free (xdist's `load`). (xdist's own `--dist loadgroup` does not
  group with pytest 9.2, whose node ids it can no longer suffix.)

Without xdist, or with `-p no:xdist`, tests run one at a time as before.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

# What each group holds: a folder or a file of tests, as node ids begin.
GROUPS = {
    "tests/cluster": "cluster",
    "tests/test_embed.py": "embed",
}
_LOCK_KEY = "factq_lock_path"


def group_of(nodeid: str) -> str:
    """The unit a process is sent: a group's name, or the test alone."""
    path = nodeid.split("::", 1)[0]
    for where, group in GROUPS.items():
        if path == where or path.startswith(where + "/"):
            return group
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For `-n N` (xdist's `load`): tests one at a time, but each group together."""
    if config.getvalue("dist") != "load":
        return None  # a --dist asked for by name
    from xdist.scheduler import LoadScopeScheduling

    class GroupedScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupedScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """In the controller, for each worker: the run's lock file."""
    config = node.config
    if not hasattr(config, "_factq_lock_path"):
        handle, path = tempfile.mkstemp(prefix="factq-tests-", suffix=".lock")
        os.close(handle)
        config._factq_lock_path = path
    node.workerinput[_LOCK_KEY] = config._factq_lock_path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = getattr(config, "_factq_lock_path", None)
    if path is not None:
        Path(path).unlink(missing_ok=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    workerinput: dict[str, Any] | None = getattr(item.config, "workerinput", None)
    if workerinput is None or _LOCK_KEY not in workerinput:
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    with open(workerinput[_LOCK_KEY], "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
