"""`shout`: a task from a plugin package, shaped like a model task.

Its "model" is loaded once in each pool process (`load`), and jobs are batched
(`batch`): the summary says which process loaded the model, how many times it
was loaded there, and how many jobs shared the call, so that tests can see
both. A text "boom" fails its own job only.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from factq.settings import Settings
from factq.tasks import Batching, ResultFormat, Task, TaskOutput

_loads = 0


class ShoutInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=1_000, description="Any text; 'boom' fails the job.")


class ShoutSummary(BaseModel):
    text: str
    model_pid: int
    loads: int
    batch: int


def load() -> dict[str, Any]:
    global _loads
    _loads += 1
    return {"pid": os.getpid(), "suffix": "!"}


def shout(inputs: list[dict[str, Any]], model: dict[str, Any]) -> list[TaskOutput]:
    if any(value["text"] == "boom" for value in inputs):
        raise ValueError("boom")
    outputs = []
    for value in inputs:
        text = value["text"].upper() + model["suffix"]
        summary = {"text": text, "model_pid": model["pid"], "loads": _loads, "batch": len(inputs)}
        outputs.append(TaskOutput(summary=summary, formats={"text": text.encode()}))
    return outputs


def factq_tasks(settings: Settings) -> list[Task]:
    return [
        Task(
            name="shout",
            description="The text in capitals, from a plugin, batched.",
            function=shout,
            input_model=ShoutInput,
            output_model=ShoutSummary,
            formats=(ResultFormat("text"),),
            load=load,
            batch=Batching(max_batch_size=8, max_batch_delay_ms=50),
        )
    ]
