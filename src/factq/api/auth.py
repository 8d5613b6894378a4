"""Who is calling: API keys (when configured), the worker token, and browser origins.

A key is never stored or logged: a job's owner is a digest of the key that
created it, and keys are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from factq import metrics
from factq.errors import Forbidden, Unauthorized
from factq.settings import Settings

ANONYMOUS = ""
FIRST_MESSAGE_TIMEOUT_S = 10.0
CLOSE_POLICY = 1008


def owner_of(key: str) -> str:
    """The owner id of a key: a digest, so Redis never holds the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def match_key(given: str, settings: Settings) -> str | None:
    """The owner of a valid key, comparing against every key without an early exit."""
    found: str | None = None
    for key in settings.api_key_list:
        if hmac.compare_digest(given.encode(), key.encode()):
            found = key
    return owner_of(found) if found is not None else None


def bearer(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_owner(connection: HTTPConnection, settings: Settings) -> str:
    """The owner of the jobs this request may see; with keys off, one shared owner."""
    if not settings.api_key_list:
        return ANONYMOUS
    given = bearer(connection)
    if given is None:
        raise Unauthorized("this route needs an API key: Authorization: Bearer <key>")
    owner = match_key(given, settings)
    if owner is None:
        raise Unauthorized("the API key is not valid")
    return owner


def check_worker_token(connection: HTTPConnection, settings: Settings) -> None:
    """Internal routes: the worker token, compared in constant time; none set, no entry."""
    token = settings.worker_token.get_secret_value()
    if not token:
        raise Forbidden("internal routes are disabled: FACTQ_WORKER_TOKEN is not set")
    given = bearer(connection) or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("this route needs the worker token")


def origin_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    """No Origin (not a browser), the page's own origin, or one listed in
    FACTQ_ALLOWED_ORIGINS."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    if origin.rstrip("/") in settings.allowed_origin_list:
        return True
    host = connection.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower() and bool(host)


async def socket_owner(websocket: WebSocket, settings: Settings) -> str | None:
    """Authenticate a WebSocket: None once it has been refused or closed.

    Checked at the handshake (Origin, then a key in the Authorization header
    or `?token=`); without one, the key may come as the first message
    `{"token": "..."}`, which keeps it out of URLs and access logs.
    """
    if not origin_allowed(websocket, settings):
        await _deny(websocket, 403, "forbidden", "this origin may not open event sockets")
        return None
    if not settings.api_key_list:
        await websocket.accept()
        return ANONYMOUS
    given = bearer(websocket) or websocket.query_params.get("token")
    if given is not None:
        owner = match_key(given, settings)
        if owner is None:
            await _deny(websocket, 401, "unauthorized", "the API key is not valid")
            return None
        await websocket.accept()
        return owner
    await websocket.accept()
    return await _first_message_owner(websocket, settings)


async def _first_message_owner(websocket: WebSocket, settings: Settings) -> str | None:
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT_S):
            message = await websocket.receive_text()
        token = json.loads(message).get("token")
    except (TimeoutError, ValueError, AttributeError, KeyError, WebSocketDisconnect):
        token = None
    owner = match_key(token, settings) if isinstance(token, str) else None
    if owner is None:
        metrics.rejected(401, Unauthorized.type).inc()
        await websocket.close(CLOSE_POLICY, 'an API key is needed: send {"token": "<key>"}')
    return owner


async def _deny(websocket: WebSocket, status_code: int, error_type: str, message: str) -> None:
    """Refuse the handshake with an HTTP answer in the contract's error shape."""
    if status_code == 401:
        metrics.rejected(status_code, error_type).inc()
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    response = JSONResponse(
        {"error": {"type": error_type, "message": message}}, status_code, headers=headers
    )
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        # The server does not support denial responses: a plain 403 refusal.
        await websocket.close(CLOSE_POLICY)
