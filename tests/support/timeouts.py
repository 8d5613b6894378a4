"""Async tests time out inside their own event loop.

pytest-timeout ends a test with a signal that lands wherever the loop happens
to be, so a test that hung could leave coroutines never awaited and
connections never closed, to fail whichever test ran next. Each async test
is therefore run under `asyncio.timeout`, a little inside its pytest-timeout
limit: on a hang it is cancelled at its await, its `async with` blocks and
`finally` clauses close what it opened, and it fails with its own message.
pytest-timeout stays, as the backstop for fixtures and synchronous code.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

DEFAULT_LIMIT_S = 60.0
# Room left for the cancelled test to unwind before pytest-timeout would fire.
UNWIND_S = 5.0


def limit_s(item: pytest.Function) -> float:
    """The test's own limit: its `timeout` marker, else the ini `timeout`, less room to unwind."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        total = float(marker.args[0])
    else:
        total = float(item.config.getini("timeout") or DEFAULT_LIMIT_S)
    return max(total - UNWIND_S, total * 0.8)


def within(
    func: Callable[..., Coroutine[Any, Any, Any]], seconds: float
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                return await func(*args, **kwargs)
        except Exception as exc:
            # Client libraries may turn the cancellation into errors of their own.
            if not limit.expired():
                raise
            message = f"timed out after {seconds:g} s (cancelled inside its event loop)"
            raise pytest.fail.Exception(message) from exc

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = within(item.obj, limit_s(item))
