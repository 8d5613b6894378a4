"""Functions for the pool's own tests: module-level, so that a pool process
imports them by name."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from factq.tasks import TaskOutput


def echo(value: str) -> TaskOutput:
    return TaskOutput(
        summary={"value": value, "pid": os.getpid()}, formats={"text": value.encode()}
    )


def big(size: int) -> TaskOutput:
    return TaskOutput(summary={}, formats={"bytes": b"x" * size})


def sleep(seconds: float) -> TaskOutput:
    time.sleep(seconds)
    return TaskOutput(summary={"slept": seconds}, formats={})


def fail(message: str) -> TaskOutput:
    raise ValueError(message)


def exit_now(code: int) -> TaskOutput:
    os._exit(code)


def unpicklable() -> TaskOutput:
    return TaskOutput(summary={}, formats={"text": (lambda: b"")})  # type: ignore[dict-item]


def with_report(report: Callable[[float], None]) -> TaskOutput:
    return TaskOutput(summary={"reported": callable(report)}, formats={})
