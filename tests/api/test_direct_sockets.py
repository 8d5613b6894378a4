"""The event sockets are served before FastAPI's middleware and routing
(`served_directly`): which scopes it takes, and which it leaves to the app.

What the sockets say is tested through real servers elsewhere (tests/api/
test_events.py); here an ASGI conversation shows who answered it.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from factq.api import events
from factq.api.app import create_app
from factq.api.events import CLOSE_BAD_REQUEST, served_directly
from factq.api.streams import StreamSlots
from factq.settings import Settings


def socket_scope(path: str, settings: Settings | None, query: bytes = b"") -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "ws",
        "subprotocols": [],
    }
    if settings is not None:
        scope["state"] = {
            "settings": settings,
            "store": None,
            "hub": None,
            "streams": StreamSlots(settings.max_streams_per_caller),
        }
    return scope


async def converse(scope: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Connect, then leave at the first read after that: whether the socket was
    served directly, and what was sent."""
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop() if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    served = await served_directly(scope, receive, send)
    return served, sent


async def test_a_job_socket_is_answered_without_the_app(settings: Settings) -> None:
    served, sent = await converse(socket_scope("/v1/jobs/nope/events", settings))
    assert served
    assert sent[0]["type"] == "websocket.accept"
    error = json.loads(sent[1]["text"])
    assert error["error"]["type"] == "invalid_request"
    assert sent[-1] == {"type": "websocket.close", "code": CLOSE_BAD_REQUEST, "reason": ""}


async def test_an_events_socket_is_answered_without_the_app(settings: Settings) -> None:
    served, sent = await converse(socket_scope("/v1/events", settings))
    assert served
    assert sent[0]["type"] == "websocket.accept"


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs/a/b/events", "/v1/jobs/0/events/more", "/v1/events/", "/ws", "/"],
)
async def test_other_socket_paths_go_to_the_app(settings: Settings, path: str) -> None:
    assert await converse(socket_scope(path, settings)) == (False, [])


async def test_without_the_lifespan_state_the_app_answers(settings: Settings) -> None:
    assert await converse(socket_scope("/v1/events", None)) == (False, [])


async def test_http_requests_go_to_the_app(settings: Settings) -> None:
    scope = {**socket_scope("/v1/events", settings), "type": "http", "method": "GET"}
    assert await converse(scope) == (False, [])


async def test_the_app_serves_its_sockets_directly(settings: Settings) -> None:
    """create_app's app hands a socket scope to served_directly first."""
    app = create_app(settings)
    served: list[str] = []

    async def record(scope: Scope, receive: Receive, send: Send) -> bool:
        served.append(scope["path"])
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events, "served_directly", record)
        await app(socket_scope("/v1/events", settings), None, None)  # type: ignore[arg-type]
    assert served == ["/v1/events"]
