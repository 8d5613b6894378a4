"""What route handlers receive: the lifespan's resources, and who is calling."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, TypedDict

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from factq.api.auth import check_worker_token, request_owner
from factq.api.conversions import Conversions
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
    # Set when the server is asked to stop: long waits answer at once.
    stopping: asyncio.Event


def get_settings(request: HTTPConnection) -> Settings:
    settings: Settings = request.state.settings
    return settings


def get_store(request: HTTPConnection) -> Store:
    store: Store = request.state.store
    return store


def get_broker(request: HTTPConnection) -> Broker:
    broker: Broker = request.state.broker
    return broker


def get_submitter(request: HTTPConnection) -> Submitter:
    submitter: Submitter = request.state.submitter
    return submitter


def get_registry(request: HTTPConnection) -> TaskRegistry:
    registry: TaskRegistry = request.state.registry
    return registry


def get_conversions(request: HTTPConnection) -> Conversions:
    conversions: Conversions = request.state.conversions
    return conversions


def get_limiter(request: HTTPConnection) -> SubmissionLimiter:
    limiter: SubmissionLimiter = request.state.limiter
    return limiter


def get_hub(request: HTTPConnection) -> EventHub:
    hub: EventHub = request.state.hub
    return hub


def get_streams(request: HTTPConnection) -> StreamSlots:
    streams: StreamSlots = request.state.streams
    return streams


def get_owner(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> str:
    """The owner of the jobs this request may see (401 without a valid key, when keys are on)."""
    return request_owner(request, settings)


def require_worker(
    request: HTTPConnection, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """Internal routes need the worker token."""
    check_worker_token(request, settings)


def checked_job_id(job_id: str) -> str:
    """A well-formed job id; anything else cannot name a job."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id[:64])
    return job_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
RegistryDep = Annotated[TaskRegistry, Depends(get_registry)]
OwnerDep = Annotated[str, Depends(get_owner)]
HubDep = Annotated[EventHub, Depends(get_hub)]
ConversionsDep = Annotated[Conversions, Depends(get_conversions)]
LimiterDep = Annotated[SubmissionLimiter, Depends(get_limiter)]
StreamsDep = Annotated[StreamSlots, Depends(get_streams)]
