"""Liveness, readiness and the task catalogue."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from factq.api.deps import BrokerDep, RegistryDep, StoreDep, get_owner
from factq.api.openapi import UNAUTHORIZED, UNAVAILABLE, error_responses
from factq.broker import QueueStats
from factq.errors import BackendUnavailable

router = APIRouter()

READY_TIMEOUT_S = 3.0


class Readiness(BaseModel):
    redis: Literal["ok", "down"]
    rabbitmq: Literal["ok", "down"]
    queue_depth: int | None
    consumers: int | None


class TaskInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
    limits: dict[str, Any]
    result_formats: list[str]


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
    redis_ok, stats = await asyncio.gather(_answers(store.ping()), _answers(broker.queue_stats()))
    readiness = Readiness(
        redis="ok" if redis_ok else "down",
        rabbitmq="ok" if stats else "down",
        queue_depth=stats.depth if isinstance(stats, QueueStats) else None,
        consumers=stats.consumers if isinstance(stats, QueueStats) else None,
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
async def list_tasks(registry: RegistryDep) -> TaskList:
    """Each task with its input's JSON Schema, its limits and its result formats."""
    return TaskList(
        tasks=[
            TaskInfo(
                name=task.name,
                description=task.description,
                input_schema=task.input_model.model_json_schema(),
                limits=task.limits,
                result_formats=[fmt.name for fmt in task.formats],
            )
            for task in registry.values()
        ]
    )
