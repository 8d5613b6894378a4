"""What route handlers receive: the lifespan's resources, and who is calling."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, TypedDict, TypeVar, get_type_hints

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from factq.api.auth import check_worker_token, request_owner
from factq.api.conversions import Conversions
from factq.api.queue_gauges import QueueGauges
from factq.api.ratelimit import SubmissionLimiter
from factq.api.streams import StreamSlots
from factq.broker import Broker
from factq.errors import JobNotFound
from factq.settings import Settings
from factq.state.events import EventHub
from factq.state.store import Store
from factq.submit import Submitter
from factq.tasks import TaskRegistry

JOB_ID = re.compile(r"[0-9a-f]{32}")

T = TypeVar("T")


class Resources(TypedDict):
    """The lifespan's state, shared by every request of one API process."""

    settings: Settings
    store: Store
    broker: Broker
    submitter: Submitter
    registry: TaskRegistry
    hub: EventHub
    conversions: Conversions
    limiter: SubmissionLimiter
    streams: StreamSlots
    queues: QueueGauges
    # Set when the server is asked to stop: long waits answer at once.
    stopping: asyncio.Event


def from_state(name: str, kind: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A dependency that answers the lifespan's resource `name`, of type `kind`,
    as `Resources` declares it."""
    if get_type_hints(Resources).get(name) is not kind:
        raise TypeError(f"the lifespan has no {kind.__name__} named {name!r}")

    # Async, as every dependency here: FastAPI runs a plain function in its
    # thread pool, a thread hop per dependency per request.
    async def resource(connection: HTTPConnection) -> T:
        value: T = getattr(connection.state, name)
        return value

    return resource


SettingsDep = Annotated[Settings, Depends(from_state("settings", Settings))]
StoreDep = Annotated[Store, Depends(from_state("store", Store))]
BrokerDep = Annotated[Broker, Depends(from_state("broker", Broker))]
SubmitterDep = Annotated[Submitter, Depends(from_state("submitter", Submitter))]
RegistryDep = Annotated[TaskRegistry, Depends(from_state("registry", TaskRegistry))]
HubDep = Annotated[EventHub, Depends(from_state("hub", EventHub))]
ConversionsDep = Annotated[Conversions, Depends(from_state("conversions", Conversions))]
LimiterDep = Annotated[SubmissionLimiter, Depends(from_state("limiter", SubmissionLimiter))]
StreamsDep = Annotated[StreamSlots, Depends(from_state("streams", StreamSlots))]
QueueGaugesDep = Annotated[QueueGauges, Depends(from_state("queues", QueueGauges))]


async def get_owner(request: Request, settings: SettingsDep) -> str:
    """The owner of the jobs this request may see (401 without a valid key, when keys are on)."""
    return request_owner(request, settings)


OwnerDep = Annotated[str, Depends(get_owner)]


async def require_worker(request: HTTPConnection, settings: SettingsDep) -> None:
    """Internal routes need the worker token."""
    check_worker_token(request, settings)


def checked_job_id(job_id: str) -> str:
    """A well-formed job id; anything else cannot name a job."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id[:64])
    return job_id
