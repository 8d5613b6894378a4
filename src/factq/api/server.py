"""How uvicorn serves the API: bounded connections, bounded request heads, a
stop that long waits hear at once.

uvicorn closes idle keep-alive connections, but a connection that sends a
request head slowly (a header line every few seconds) is held forever, and
nothing bounds how many connections a process holds until it runs out of
file descriptors. `GuardedHttpProtocol` closes a connection whose request
head is not complete within `FACTQ_HEADER_TIMEOUT_S`, and answers 503 to a
connection past `FACTQ_MAX_CONNECTIONS`, before it can hold anything. A
reverse proxy in front does the same for its own connections (nginx's
`client_header_timeout`, `worker_connections`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from factq import metrics
from factq.settings import Settings

logger = logging.getLogger(__name__)

# Kept out of the connection budget: Redis and RabbitMQ connections, the
# process pool's pipes, files.
RESERVED_DESCRIPTORS = 64
BUSY_RETRY_AFTER_S = 1


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return soft


def max_connections(settings: Settings, descriptor_limit: int) -> int:
    """FACTQ_MAX_CONNECTIONS, or by default 90% of the descriptors left once the
    Redis pool and the reserve are counted out."""
    if settings.max_connections:
        return settings.max_connections
    spare = descriptor_limit - settings.redis_max_connections - RESERVED_DESCRIPTORS
    return max(16, int(spare * 0.9))


def _busy_response() -> bytes:
    body = json.dumps(
        {
            "error": {
                "type": "unavailable",
                "message": "this API process holds as many connections as it may; retry",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {BUSY_RETRY_AFTER_S}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY_RESPONSE = _busy_response()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with a deadline on each request head and a cap on
    the connections of the process (`header_timeout_s` and `max_connections`,
    set on the class by `protocol_for`)."""

    header_timeout_s: float = 10.0
    max_connections: int = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            metrics.rejected(503, "max_connections").inc()
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A keep-alive connection's next request: its head has the same deadline.
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Whatever comes next (a new request, or bytes that start none, such
        # as a bare CRLF) must make a whole head in time, or the connection goes.
        if not self.transport.is_closing() and self._head_timer is None:
            self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Not an HTTP connection any more (handed over to a WebSocket), or gone.
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # Serving a request (a long wait, a stream): look again later, so
            # that a head pipelined behind it is held to a deadline too.
            self._start_head_timer()
            return
        self.transport.close()


def protocol_for(settings: Settings, descriptor_limit: int) -> type[GuardedHttpProtocol]:
    """The protocol class with this deployment's limits."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_connections": max_connections(settings, descriptor_limit),
        },
    )


class Server(uvicorn.Server):
    """uvicorn's server, which also sets the app's `stopping` event as its
    shutdown begins, so that waits in progress (`Prefer: wait`, event streams)
    answer at once instead of holding the shutdown."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.set()
        await super().shutdown(sockets)
