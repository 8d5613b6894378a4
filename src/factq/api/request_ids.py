"""X-Request-ID: the caller's, when it is a safe one, else a new one; on every
response, on the request's log lines, and on the messages of the jobs it submits."""

from __future__ import annotations

import re
import secrets
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factq.logs import log_context

HEADER: Final = b"x-request-id"
# What a caller's id may be: enough for a UUID or a tracing system's ids,
# and nothing a log line or a header could be broken with.
VALID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str:
    """The request's X-Request-ID when it is a valid one; else a new one, 128 random bits."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == HEADER and VALID.fullmatch(value):
            return value.decode("ascii")
    return secrets.token_hex(16)


async def with_request_id(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a request or a WebSocket with its id (`request_id_of`): in the log
    context while it is served, and as X-Request-ID on its response (on a
    WebSocket, on the handshake that accepts it)."""
    if scope["type"] not in ("http", "websocket"):
        await app(scope, receive, send)
        return
    request_id = request_id_of(scope)
    header = (HEADER, request_id.encode("ascii"))

    async def send_with_id(message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.accept"):
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    # uvicorn writes the access line as the response starts, in this context:
    # the line is about this request too.
    with log_context(request_id=request_id):
        await app(scope, receive, send_with_id)
