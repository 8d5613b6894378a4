"""Tasks for tests only, loaded through FACTQ_TASK_MODULES=tests.support.tasks.

`record` appends one line per execution to a log file named in its input, so
a test can count how often a job was really computed, not only completed;
`memo` is the same, declared deterministic, for the result cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from factq.settings import Settings
from factq.tasks import ResultFormat, Task, TaskOutput


class RecordInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(max_length=100)
    log: str
    sleep_s: float = Field(0.0, ge=0, le=60)


def record(tag: str, log: str, sleep_s: float = 0.0) -> TaskOutput:
    with open(log, "a") as file:
        # The parent of a pool process is its worker's forkserver: one per worker.
        file.write(f"{tag} {os.getpid()} {os.getppid()}\n")
    time.sleep(sleep_s)
    return TaskOutput(summary={"tag": tag}, formats={"text": tag.encode()})


def record_then_fail(tag: str, log: str, sleep_s: float = 0.0) -> TaskOutput:
    record(tag, log, sleep_s)
    raise ValueError(f"{tag} failed")


class FailInput(BaseModel):
    message: str


def fail(message: str) -> TaskOutput:
    raise ValueError(message)


class CrashInput(BaseModel):
    log: str


def crash(log: str) -> TaskOutput:
    """Die the way a segfault or the OOM killer ends a pool process."""
    with open(log, "a") as file:
        file.write(f"crash {os.getpid()} {os.getppid()}\n")
    os._exit(1)


class StepsInput(BaseModel):
    steps: int = Field(ge=1, le=100_000)
    duration_s: float = Field(ge=0, le=60)


def steps(steps: int, duration_s: float, report: Callable[[float], None]) -> TaskOutput:
    """Report progress after each of `steps` equal steps spread over `duration_s`."""
    for step in range(1, steps + 1):
        time.sleep(duration_s / steps)
        report(step / steps)
    return TaskOutput(summary={"steps": steps}, formats={"text": b"done"})


def factq_tasks(settings: Settings) -> list[Task]:
    return [
        Task(
            name="record",
            description="Log one line per execution, sleep, return the tag.",
            function=record,
            input_model=RecordInput,
            formats=(ResultFormat("text"),),
        ),
        Task(
            name="memo",
            description="`record`, declared deterministic: identical jobs share a run.",
            function=record,
            input_model=RecordInput,
            formats=(ResultFormat("text"),),
            deterministic=True,
        ),
        Task(
            name="memo_fail",
            description="`record`, then raise ValueError; declared deterministic.",
            function=record_then_fail,
            input_model=RecordInput,
            formats=(ResultFormat("text"),),
            deterministic=True,
        ),
        Task(
            name="crash",
            description="End its own pool process.",
            function=crash,
            input_model=CrashInput,
            formats=(ResultFormat("text"),),
        ),
        Task(
            name="steps",
            description="Report progress often, for the throttle.",
            function=steps,
            input_model=StepsInput,
            formats=(ResultFormat("text"),),
        ),
        Task(
            name="fail",
            description="Raise ValueError(message).",
            function=fail,
            input_model=FailInput,
            formats=(ResultFormat("text"),),
        ),
    ]


def executions(log: str) -> list[tuple[str, int]]:
    """(tag, pid) for every execution recorded in log."""
    return [(tag, pid) for tag, pid, _ in executions_by_worker(log)]


def executions_by_worker(log: str) -> list[tuple[str, int, int]]:
    """(tag, pool process pid, its worker's forkserver pid) for every execution."""
    if not os.path.exists(log):
        return []
    with open(log) as file:
        return [(tag, int(pid), int(parent)) for tag, pid, parent in map(str.split, file)]
