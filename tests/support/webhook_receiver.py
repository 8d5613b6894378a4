"""Webhook receivers for tests: one in a thread (`receiving`), or any ASGI app
served on the test's event loop (`serving`)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import ClassVar

import uvicorn
from starlette.types import ASGIApp

from tests.support.waiting import until


class Receiver(http.server.BaseHTTPRequestHandler):
    """Takes webhook deliveries; keeps each one's path and Authorization."""

    received: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, self.headers.get("authorization", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def receiving() -> Iterator[int]:
    """Serve `Receiver` (its deliveries cleared first) until exit; its port."""
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    """The app on 127.0.0.1:port, served by uvicorn on this event loop, until exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
