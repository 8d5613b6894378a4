"""Tasks for tests only, loaded through FACTQ_TASK_MODULES=tests.support.tasks.

`record` appends one line per execution to a log file named in its input, so
a test can count how often a job was really computed, not only completed;
`memo` is the same, declared deterministic, for the result cache. `tally` is
`record` for batches, with a model loaded once per pool process; `broken_model`
is a task whose model never loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from factq.settings import Settings
from factq.tasks import Batching, ResultFormat, Task, TaskOutput


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


class TallyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(max_length=100)
    log: str
    sleep_s: float = Field(0.0, ge=0, le=60)
    # This item fails (its job only).
    fail: bool = False
    # The first batch holding this item ends its pool process, once per path:
    # the file is made as it crashes, so that the redelivered batch runs.
    crash_once: str | None = None
    # Items this job counts for in a batch.
    items: int = Field(1, ge=1, le=100)


_tally_loads = 0


def load_tally() -> dict[str, int]:
    global _tally_loads
    _tally_loads += 1
    return {"pid": os.getpid()}


def tally(inputs: list[dict[str, Any]], model: dict[str, int]) -> list[TaskOutput | Exception]:
    """Record each item's execution, then sleep the longest of the items' sleeps."""
    for value in inputs:
        marker = value.get("crash_once")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
    for value in inputs:
        with open(value["log"], "a") as file:
            file.write(f"{value['tag']} {os.getpid()} {os.getppid()}\n")
    time.sleep(max(value.get("sleep_s", 0.0) for value in inputs))
    tags = [value["tag"] for value in inputs]
    outputs: list[TaskOutput | Exception] = []
    for value in inputs:
        if value.get("fail"):
            outputs.append(ValueError(f"{value['tag']} failed"))
            continue
        summary = {
            "tag": value["tag"],
            "batch": tags,
            "model_pid": model["pid"],
            "loads": _tally_loads,
        }
        outputs.append(TaskOutput(summary=summary, formats={"text": value["tag"].encode()}))
    return outputs


def items_in(value: dict[str, Any]) -> int:
    return int(value.get("items", 1))


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


def load_broken() -> None:
    raise FileNotFoundError("no weights at /nowhere/model.bin")


def broken(model: None) -> TaskOutput:
    raise AssertionError("never runs: its model does not load")


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
        Task(
            name="tally",
            description="`record` in batches of up to 4 items, with a model per process.",
            function=tally,
            input_model=TallyInput,
            formats=(ResultFormat("text"),),
            load=load_tally,
            batch=Batching(max_batch_size=4, max_batch_delay_ms=100, size=items_in),
        ),
        Task(
            name="broken_model",
            description="A task whose model never loads.",
            function=broken,
            input_model=NoInput,
            formats=(ResultFormat("text"),),
            load=load_broken,
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
