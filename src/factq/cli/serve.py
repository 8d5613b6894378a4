"""Running the service: `factq api`, `factq worker` and `factq dev`, once the CLI parsed them.

Only the server commands import this module: it loads the whole server stack,
which the job commands, as clients, never need.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import uvicorn

from factq.api.server import Server, protocol_for, raise_descriptor_limit
from factq.broker import Broker
from factq.logs import route_server_logs
from factq.settings import Settings
from factq.state.store import Store

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("factq")

WS_PING_INTERVAL_S = 20.0
WS_MAX_MESSAGE_BYTES = 64 * 1024


def run_api(settings: Settings, host: str, port: int) -> int:
    """Serve the API until SIGINT or SIGTERM; uvicorn drains open requests."""
    from factq.api import create_app

    asyncio.run(_preflight(settings))
    app = create_app(settings)
    server = Server(server_config(app, settings, host, port), app.state.stopping)
    server.run()
    return 0 if server.started else 3


def server_config(
    app: FastAPI, settings: Settings, host: str, port: int, *, log_level: str | None = None
) -> uvicorn.Config:
    """How uvicorn serves the API: the WebSocket limits are part of the contract."""
    # No log_config: uvicorn then leaves logging alone, and its lines, access
    # lines included, go to factq's handler in factq's format, keys masked.
    route_server_logs()
    descriptors = raise_descriptor_limit()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=log_level or settings.log_level,
        lifespan="on",
        http=protocol_for(settings, descriptors),
        # Proxy headers only from the proxies named: from anyone else, a client
        # would choose its own address (and so its rate-limit bucket).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or [],
        # Waits end as shutdown begins; anything still open past the grace is cancelled.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        # Protocol pings find dead peers (a client that stops answering is
        # closed) and keep idle connections open through proxies; client
        # messages over 64 KB close with 1009.
        ws_ping_interval=WS_PING_INTERVAL_S,
        ws_ping_timeout=WS_PING_INTERVAL_S,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
    )


async def _preflight(settings: Settings) -> None:
    """Fail with one clear line, not a traceback, when a backing service is missing."""
    async with Store.open(settings) as store, Broker.open(settings, name="factq-preflight"):
        await store.ping()


def run_worker(settings: Settings) -> int:
    """Consume until SIGINT or SIGTERM, then finish held jobs within the grace period."""
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    from factq.worker import Worker

    async with Worker(settings) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
    return 0


def run_dev(host: str, port: int, concurrency: int) -> int:
    """The API and a worker as child processes; the first to exit stops the other."""
    python = [sys.executable, "-m", "factq"]
    children = [
        subprocess.Popen([*python, "worker", "--concurrency", str(concurrency)]),
        subprocess.Popen([*python, "api", "--host", host, "--port", str(port)]),
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    logger.info(
        "dev: API on http://%s:%d (docs at /docs), worker with %d processes; Ctrl-C stops both",
        host,
        port,
        concurrency,
    )
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [child.wait() for child in children]
    failed = [code for code in codes if code not in (0, -signal.SIGTERM)]
    return 0 if stopping or not failed else failed[0]
