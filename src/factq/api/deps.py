"""What route handlers receive: the lifespan's resources, and who is calling."""

from __future__ import annotations

import hmac
import re
from concurrent.futures import Executor
from typing import Annotated, TypedDict

from fastapi import Depends
from starlette.requests import HTTPConnection

from factq.broker import Broker
from factq.errors import Forbidden, JobNotFound
from factq.events import EventHub
from factq.settings import Settings
from factq.store import Store
from factq.tasks import TaskRegistry

JOB_ID = re.compile(r"[0-9a-f]{32}")
ANONYMOUS = ""


class Resources(TypedDict):
    """The lifespan's state, shared by every request of one API process."""

    settings: Settings
    store: Store
    broker: Broker
    registry: TaskRegistry
    hub: EventHub
    converter: Executor


def get_settings(request: HTTPConnection) -> Settings:
    settings: Settings = request.state.settings
    return settings


def get_store(request: HTTPConnection) -> Store:
    store: Store = request.state.store
    return store


def get_broker(request: HTTPConnection) -> Broker:
    broker: Broker = request.state.broker
    return broker


def get_registry(request: HTTPConnection) -> TaskRegistry:
    registry: TaskRegistry = request.state.registry
    return registry


def get_converter(request: HTTPConnection) -> Executor:
    converter: Executor = request.state.converter
    return converter


def get_hub(request: HTTPConnection) -> EventHub:
    hub: EventHub = request.state.hub
    return hub


def get_owner() -> str:
    """The owner of the jobs this request may see: with API keys off, one shared owner."""
    return ANONYMOUS


def require_worker(
    request: HTTPConnection, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """Internal routes: the worker token, compared in constant time; none set, no entry."""
    token = settings.worker_token.get_secret_value()
    if not token:
        raise Forbidden("internal routes are disabled: FACTQ_WORKER_TOKEN is not set")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("this route needs the worker token")


def checked_job_id(job_id: str) -> str:
    """A well-formed job id; anything else cannot name a job."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id[:64])
    return job_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
RegistryDep = Annotated[TaskRegistry, Depends(get_registry)]
OwnerDep = Annotated[str, Depends(get_owner)]
HubDep = Annotated[EventHub, Depends(get_hub)]
ConverterDep = Annotated[Executor, Depends(get_converter)]
