"""Liveness, readiness and the task catalogue."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from factq.api.deps import BrokerDep, RegistryDep, SettingsDep, StoreDep, get_owner
from factq.api.openapi import UNAUTHORIZED, UNAVAILABLE, error_responses
from factq.broker import QueueStats
from factq.errors import BackendUnavailable
from factq.settings import Settings
from factq.tasks import Task

router = APIRouter()

READY_TIMEOUT_S = 3.0


class TaskQueue(BaseModel):
    queue_depth: int = Field(description="Jobs of the task waiting in its queue.")
    consumers: int = Field(description="Workers taking the task's jobs now.")


class Readiness(BaseModel):
    redis: Literal["ok", "down"]
    rabbitmq: Literal["ok", "down"]
    queue_depth: int | None = Field(description="Jobs waiting, all tasks together.")
    consumers: int | None = Field(description="Consumers of the tasks' queues, together.")
    tasks: dict[str, TaskQueue] | None = Field(
        description="Each task's queue: a task with 0 consumers has no worker serving it."
    )


class Batch(BaseModel):
    max_batch_size: int
    max_batch_delay_ms: float


class TaskInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = Field(
        description="JSON Schema of the summary in a succeeded job's `result`."
    )
    limits: dict[str, Any]
    result_formats: list[str]
    deterministic: bool
    version: str
    batch: Batch | None = Field(
        description="How a worker gathers the task's jobs into one call; null: one at a time."
    )
    memory_mib: int = Field(description="Memory a pool process needs for the task (0: little).")
    consumers: int | None = Field(
        description="Workers serving the task now (0: its jobs wait; null: RabbitMQ is down)."
    )
    queue_depth: int | None = Field(description="Its jobs waiting in its queue.")


class TaskList(BaseModel):
    tasks: list[TaskInfo]


@router.get(
    "/healthz",
    tags=["operations"],
    summary="The process is alive",
    responses=error_responses(UNAVAILABLE),
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=Readiness,
    summary="Redis and RabbitMQ are reachable",
    responses={503: {"model": Readiness, "description": "Something is down; it says what."}},
)
async def readyz(store: StoreDep, broker: BrokerDep) -> JSONResponse:
    """200 when both backing services answer, else 503 naming what is down."""
    redis_ok, stats = await asyncio.gather(
        _answers(store.ping()), _answers(broker.all_queue_stats())
    )
    queues = stats if isinstance(stats, dict) else None
    readiness = Readiness(
        redis="ok" if redis_ok else "down",
        rabbitmq="ok" if queues is not None else "down",
        queue_depth=None if queues is None else sum(q.depth for q in queues.values()),
        consumers=None if queues is None else sum(q.consumers for q in queues.values()),
        tasks=None
        if queues is None
        else {
            name: TaskQueue(queue_depth=q.depth, consumers=q.consumers)
            for name, q in queues.items()
        },
    )
    ready = readiness.redis == "ok" and readiness.rabbitmq == "ok"
    return JSONResponse(
        readiness.model_dump(),
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


async def _answers(check: Any) -> Any:
    """The check's result (True for None), or False when the service does not answer in time."""
    try:
        result = await asyncio.wait_for(check, READY_TIMEOUT_S)
    except (BackendUnavailable, TimeoutError):
        return False
    return True if result is None else result


@router.get(
    "/v1/tasks",
    tags=["tasks"],
    response_model=TaskList,
    summary="The tasks this runs",
    dependencies=[Depends(get_owner)],
    responses=error_responses(UNAUTHORIZED, UNAVAILABLE),
)
async def list_tasks(registry: RegistryDep, broker: BrokerDep, settings: SettingsDep) -> TaskList:
    """Each task with its input's and its summary's JSON Schemas, its limits, its
    result formats, what it needs of a worker, and whether a worker serves it now."""
    queues: dict[str, QueueStats] | None
    try:
        queues = await asyncio.wait_for(broker.all_queue_stats(), READY_TIMEOUT_S)
    except (BackendUnavailable, TimeoutError):
        queues = None
    return TaskList(tasks=[_task_info(task, settings, queues) for task in registry.values()])


def _task_info(task: Task, settings: Settings, queues: dict[str, QueueStats] | None) -> TaskInfo:
    batch = task.batch_limits(settings)
    stats = None if queues is None else queues.get(task.name)
    return TaskInfo(
        name=task.name,
        description=task.description,
        input_schema=task.input_model.model_json_schema(),
        output_schema=None if task.output_model is None else task.output_model.model_json_schema(),
        limits=task.limits,
        result_formats=[fmt.name for fmt in task.formats],
        deterministic=task.deterministic,
        version=task.version,
        batch=None if batch is None else Batch(**batch._asdict()),
        memory_mib=task.memory_mib,
        consumers=None if stats is None else stats.consumers,
        queue_depth=None if stats is None else stats.depth,
    )
