"""Live events of jobs: a WebSocket per job, one multiplexed WebSocket, and SSE.

All three are built on `factq.state.events.follow`, so they carry the same events
with the same `seq`, and none misses or repeats one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from factq import metrics
from factq.aio import cancel_and_wait
from factq.api.auth import socket_owner
from factq.api.deps import (
    JOB_ID,
    HubDep,
    OwnerDep,
    SettingsDep,
    StoreDep,
    StreamsDep,
    checked_job_id,
)
from factq.api.openapi import (
    INVALID_REQUEST,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    RouteError,
    error_responses,
)
from factq.api.streams import StreamSlots, caller_of
from factq.errors import (
    BackendUnavailable,
    InvalidRequest,
    JobNotFound,
    RateLimited,
    first_problem,
    validation_details,
)
from factq.schema import JobEvent
from factq.state.events import EventHub, SlowSubscriber, follow
from factq.state.store import Store

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

# Close codes: 1000 done, 1011 server error, 1013 try again later (the
# client fell behind, or a backing service is down), 4400 a bad parameter,
# 4404 no such job.
CLOSE_DONE: Final = 1000
CLOSE_SERVER_ERROR: Final = 1011
CLOSE_TRY_LATER: Final = 1013
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_NOT_FOUND: Final = 4404
# Jobs one multiplexed socket may follow at once.
MAX_SUBSCRIPTIONS: Final = 1000
# Messages waiting to be sent on one socket before its client counts as too
# slow (closed with 1013): room for a full socket's snapshots and a few
# changes of each job, which arrive together when all subscribe at once.
SEND_BUFFER: Final = 4 * MAX_SUBSCRIPTIONS

# The event sockets' paths, as served_directly serves them.
_JOB_SOCKET_PATH: Final = re.compile(r"/v1/jobs/([^/]*)/events")
_EVENTS_SOCKET_PATH: Final = "/v1/events"

After = Annotated[
    int | None,
    Query(ge=0, description="Replay the job's events after this `seq`, then go live."),
]


async def _serve_socket(
    websocket: WebSocket, produce: Callable[[], Coroutine[Any, Any, int]]
) -> None:
    """Run produce() until it returns a close code, or until the client goes away.

    produce() runs in this task and only the listener in a task of its own:
    one task a socket fewer, for thousands of idle sockets. The client's
    leaving cancels this task, and that cancel alone ends the socket quietly.
    """
    serving = asyncio.current_task()
    assert serving is not None
    producing = True

    def client_left(_: object) -> None:
        if producing:
            serving.cancel()

    listener = asyncio.create_task(_until_disconnect(websocket))
    listener.add_done_callback(client_left)
    try:
        code = await produce()
    except asyncio.CancelledError:
        if listener.done() and serving.uncancel() == 0:
            return  # the client left: nothing more to send
        raise
    except Exception:
        return  # the socket is gone (the producer already said why, where it knew)
    finally:
        producing = False
        listener.remove_done_callback(client_left)
        await cancel_and_wait({listener})
    await _close(websocket, code)


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _close(websocket: WebSocket, code: int) -> None:
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code)


async def _send_events(websocket: WebSocket, events: AsyncIterator[JobEvent]) -> int:
    """Send each event; the close code says how the stream ended."""
    try:
        async for event in events:
            await websocket.send_text(event.model_dump_json())
            del event  # an idle socket holds no event while it waits for the next
    except JobNotFound:
        return CLOSE_NOT_FOUND
    except (SlowSubscriber, BackendUnavailable) as exc:
        logger.info("closing an event socket: %s", exc)
        return CLOSE_TRY_LATER
    except WebSocketDisconnect:
        raise
    except Exception:
        logger.exception("event socket failed")
        return CLOSE_SERVER_ERROR
    return CLOSE_DONE


@router.websocket("/v1/jobs/{job_id}/events")
async def job_events_socket(
    websocket: WebSocket,
    job_id: str,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    streams: StreamsDep,
    after: Annotated[
        str | None,
        Query(description="Replay the job's events after this `seq`, then go live."),
    ] = None,
) -> None:
    """The job's current state (or its events after `?after=`), each change, then close 1000."""
    owner = await socket_owner(websocket, settings)
    if owner is None:
        return
    try:
        resume = _socket_after(after)
        if not JOB_ID.fullmatch(job_id):
            raise InvalidRequest(f"{job_id[:64]!r} is not a job id (32 hexadecimal digits)")
    except InvalidRequest as exc:
        await _refuse(websocket, exc)
        return

    async def produce() -> int:
        return await _send_events(websocket, follow(store.events, hub, job_id, owner, after=resume))

    await _holding_a_slot(websocket, streams, owner, lambda: _serve_socket(websocket, produce))


@router.websocket("/v1/jobs/{job_path:path}/events")
async def misaddressed_events_socket(
    websocket: WebSocket, job_path: str, settings: SettingsDep
) -> None:
    """A job id with a slash in it (`/v1/jobs/a%2Fb/events`): no job, a bad parameter."""
    if await socket_owner(websocket, settings) is not None:
        message = f"{job_path[:64]!r} is not a job id (32 hexadecimal digits)"
        await _refuse(websocket, InvalidRequest(message))


async def _holding_a_slot(
    websocket: WebSocket,
    streams: StreamSlots,
    owner: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Serve the socket within its caller's FACTQ_MAX_STREAMS_PER_CALLER, or refuse it."""
    try:
        slot = streams.acquire(caller_of(websocket, owner))
    except RateLimited as exc:
        metrics.rejected(429, exc.type).inc()
        await _refuse(websocket, exc)
        return
    open_sockets = metrics.open_streams("websocket")
    open_sockets.inc()
    try:
        await serve()
    finally:
        open_sockets.dec()
        slot.release()


def _socket_after(after: str | None) -> int | None:
    if after is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", after):
        raise InvalidRequest(f"after must be an event's seq, a whole number, not {after[:40]!r}")
    return int(after)


async def _refuse(websocket: WebSocket, exc: InvalidRequest | RateLimited) -> None:
    """Say why in the contract's error shape, then close: 4400 for a bad parameter,
    1013 (try again later) for a caller with too many streams open."""
    code = CLOSE_BAD_REQUEST if isinstance(exc, InvalidRequest) else CLOSE_TRY_LATER
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.send_text(_error(None, exc.type, exc.message))
    await _close(websocket, code)


class _Subscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscribe: list[str] = Field(default_factory=list, max_length=1000)
    unsubscribe: list[str] = Field(default_factory=list, max_length=1000)


@router.websocket("/v1/events")
async def events_socket(
    websocket: WebSocket, store: StoreDep, hub: HubDep, settings: SettingsDep, streams: StreamsDep
) -> None:
    """Many jobs on one socket: send `{"subscribe": [ids]}` or `{"unsubscribe": [ids]}`."""
    owner = await socket_owner(websocket, settings)
    if owner is None:
        return
    multiplexer = _Multiplexer(websocket, store, hub, owner)
    await _holding_a_slot(websocket, streams, owner, multiplexer.serve)


class _Multiplexer:
    """One client's subscriptions: a forwarder per job, one bounded outbox, one sender."""

    def __init__(self, websocket: WebSocket, store: Store, hub: EventHub, owner: str) -> None:
        self._websocket = websocket
        self._store = store
        self._hub = hub
        self._owner = owner
        self._outbox: asyncio.Queue[str] = asyncio.Queue(SEND_BUFFER)
        self._forwarders: dict[str, asyncio.Task[None]] = {}
        # Unsubscribed forwarders, being ended.
        self._ending: set[asyncio.Future[Any]] = set()
        self._fell_behind = asyncio.Event()

    async def serve(self) -> None:
        receiver = asyncio.create_task(self._receive())
        sender = asyncio.create_task(self._send())
        behind = asyncio.create_task(self._fell_behind.wait())
        try:
            await asyncio.wait({receiver, sender, behind}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait({receiver, sender, behind, *self._forwarders.values()})
            await asyncio.gather(*self._ending, return_exceptions=True)
        if self._fell_behind.is_set():
            # Closed, not waited for; the client subscribes again to catch up.
            await _close(self._websocket, CLOSE_TRY_LATER)

    def _post(self, text: str) -> None:
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            self._fell_behind.set()

    async def _send(self) -> None:
        while True:
            await self._websocket.send_text(await self._outbox.get())

    async def _receive(self) -> None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                request = _Subscribe.model_validate_json(message.get("text") or "")
            except ValidationError as exc:
                self._post(_error(None, "invalid_request", _first_error(exc)))
                continue
            for job_id in request.unsubscribe:
                task = self._forwarders.pop(job_id, None)
                if task is not None:
                    ending = asyncio.ensure_future(cancel_and_wait({task}))
                    self._ending.add(ending)
                    ending.add_done_callback(self._ending.discard)
            new = [
                job_id
                for job_id in dict.fromkeys(request.subscribe)
                if job_id not in self._forwarders
            ]
            if len(self._forwarders) + len(new) > MAX_SUBSCRIPTIONS:
                # All or nothing, so that the client knows what it follows.
                self._post(
                    _error(
                        None,
                        "too_many_subscriptions",
                        f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection "
                        f"({len(self._forwarders)} now); none of these {len(new)} was made: "
                        "unsubscribe first, or open another connection",
                    )
                )
                continue
            for job_id in new:
                self._forwarders[job_id] = asyncio.create_task(self._forward(job_id))

    async def _forward(self, job_id: str) -> None:
        try:
            async for event in follow(
                self._store.events, self._hub, checked_job_id(job_id), self._owner
            ):
                self._post(event.model_dump_json())
                del event  # held by no idle subscription
        except JobNotFound:
            self._post(_error(job_id, "not_found", f"no job with id {job_id[:64]!r}"))
        except BackendUnavailable as exc:
            self._post(_error(job_id, "unavailable", exc.message))
        except SlowSubscriber:
            self._fell_behind.set()
        finally:
            # Only this forwarder's own entry: an unsubscribe and subscribe
            # may already have put a new one in its place.
            if self._forwarders.get(job_id) is asyncio.current_task():
                del self._forwarders[job_id]


def _error(job_id: str | None, error_type: str, message: str) -> str:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if job_id is not None:
        body["id"] = job_id
    return json.dumps(body)


def _first_error(exc: ValidationError) -> str:
    problem = first_problem(validation_details(exc.errors(include_url=False)))
    return f'{problem}; send {{"subscribe": [ids]}} or {{"unsubscribe": [ids]}}'


async def _stream_start(
    job_id: str,
    store: StoreDep,
    owner: OwnerDep,
    after: After = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{0,18}$")
    ] = None,
) -> tuple[str, int | None]:
    """The job and where to resume, checked before the stream starts (a 404 or
    400 is impossible once it has)."""
    await store.events.current(checked_job_id(job_id), owner)
    return job_id, after if after is not None else _seq(last_event_id)


async def _stream_slot(
    request: Request, streams: StreamsDep, owner: OwnerDep
) -> AsyncIterator[None]:
    """Held while the stream is open (FastAPI ends it after the response): a 429
    before the stream starts for a caller with too many open."""
    slot = streams.acquire(caller_of(request, owner))
    open_streams = metrics.open_streams("sse")
    open_streams.inc()
    try:
        yield
    finally:
        open_streams.dec()
        slot.release()


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a job as Server-Sent Events",
    responses=error_responses(
        INVALID_REQUEST,
        UNAUTHORIZED,
        NOT_FOUND,
        RouteError(
            429, "Too many event streams open for this key (rate_limited); see Retry-After."
        ),
        UNAVAILABLE,
    ),
)
async def job_events_stream(
    start: Annotated[tuple[str, int | None], Depends(_stream_start)],
    _slot: Annotated[None, Depends(_stream_slot)],
    store: StoreDep,
    hub: HubDep,
    owner: OwnerDep,
    request: Request,
) -> AsyncIterator[ServerSentEvent]:
    """The job's current state, then each change, until it ends; `id:` is the event's `seq`.

    A reconnecting client's `Last-Event-ID` (or `?after=`) resumes after that event.
    A stopping server ends the stream at once; the client resumes elsewhere.
    """
    job_id, resume = start
    events = follow(store.events, hub, job_id, owner, after=resume)
    async for event in _until_set(events, request.state.stopping):
        yield ServerSentEvent(raw_data=event.model_dump_json(), id=str(event.seq))


async def _until_set(
    events: AsyncIterator[JobEvent], stop: asyncio.Event
) -> AsyncIterator[JobEvent]:
    """The events, until they end or `stop` is set, whichever comes first."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                await cancel_and_wait({following})
                return
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopped.cancel()


def _seq(last_event_id: str | None) -> int | None:
    if last_event_id is None or last_event_id == "":
        return None
    if not re.fullmatch(r"[0-9]{1,18}", last_event_id):
        raise InvalidRequest(f"Last-Event-ID must be an event's seq, not {last_event_id[:40]!r}")
    return int(last_event_id)


async def served_directly(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve the two event sockets before FastAPI's middleware and routing; False
    for anything else (every HTTP request, any other socket path, a scope
    without the lifespan's state), which the app then serves.

    A socket's handshake is the hot path of a page with thousands of watchers:
    routing, the dependency solver, the middleware layers and the per-request
    exit stacks cost more CPU than the handshake itself, and their frames stay
    in memory for the socket's whole life. The handlers are the routes' own
    functions, given what the lifespan made (as their dependencies would be);
    the routes stay declared, and serve any socket this does not take.
    """
    state = scope.get("state")
    if scope["type"] != "websocket" or not state:
        return False
    path = scope["path"]
    if path == _EVENTS_SOCKET_PATH:
        websocket = WebSocket(scope, receive, send)
        await events_socket(
            websocket, state["store"], state["hub"], state["settings"], state["streams"]
        )
        return True
    match = _JOB_SOCKET_PATH.fullmatch(path)
    if match is None:
        return False
    websocket = WebSocket(scope, receive, send)
    await job_events_socket(
        websocket,
        match[1],
        state["store"],
        state["hub"],
        state["settings"],
        state["streams"],
        websocket.query_params.get("after"),
    )
    return True
