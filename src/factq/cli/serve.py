"""Running the API: `factq api` and `factq dev`, once the CLI parsed them.

Only these commands import this module: it loads the whole web stack, which
the worker (`factq.cli.work`) and the job commands, as clients, never need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from factq import metrics
from factq.api.server import Server, protocol_for, raise_descriptor_limit
from factq.broker import Broker
from factq.logs import configure_logging, route_server_logs
from factq.settings import Settings
from factq.state.store import Store
from factq.tasks import TaskRegistry

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("factq")

WS_PING_INTERVAL_S = 20.0
WS_MAX_MESSAGE_BYTES = 64 * 1024


# A server process that exits with this never started: starting it again would fail alike.
STARTUP_FAILED = 3
SUPERVISE_EVERY_S = 0.5


def run_api(settings: Settings, host: str, port: int) -> int:
    """Serve the API until SIGINT or SIGTERM; uvicorn drains open requests.

    With FACTQ_API_WORKERS above 1, that many processes serve one listening
    socket, bound here and handed to each; a process that dies is replaced.
    """
    asyncio.run(_preflight(settings))
    if settings.api_workers == 1:
        return _serve(settings, host, port)
    return _supervise(settings, host, port)


def _serve(
    settings: Settings, host: str, port: int, sockets: list[socket.socket] | None = None
) -> int:
    from factq.api import create_app

    app = create_app(settings)
    server = Server(server_config(app, settings, host, port), app.state.stopping)
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILED


def _serve_in_child(host: str, port: int, listening: socket.socket) -> None:
    """One of several API processes (spawned): settings and logging as its parent's,
    from the same FACTQ_* environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(_serve(settings, host, port, [listening]))


def _supervise(settings: Settings, host: str, port: int) -> int:
    """Run settings.api_workers API processes until SIGINT or SIGTERM."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.set())
    with metrics_directory():
        processes = ApiProcesses(host, port)
        try:
            processes.start(settings.api_workers)
            logger.info(
                "serving the API with %d processes on %s:%d", settings.api_workers, host, port
            )
            while not stopping.wait(SUPERVISE_EVERY_S):
                if not processes.keep_alive():
                    return STARTUP_FAILED
            return 0
        finally:
            processes.stop(settings.shutdown_grace_s + 10)


@contextlib.contextmanager
def metrics_directory() -> Iterator[None]:
    """A fresh directory for the metrics of the API processes about to start
    (prometheus-client's multiprocess mode: each writes its values there, and
    any one's /metrics sums them all), removed once they are gone."""
    path = tempfile.mkdtemp(prefix="factq-metrics-")
    # Set before any process starts: each reads it as it imports the library.
    os.environ[metrics.MULTIPROC_DIR_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(metrics.MULTIPROC_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


class ApiProcesses:
    """Spawned API processes serving one socket bound here."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        # No log_config, as for the servers: uvicorn's would replace factq's
        # handler with its own for the line that binding logs, and after it.
        config = uvicorn.Config("factq.api:create_app", host=host, port=port, log_config=None)
        self._listening = config.bind_socket()
        self._context = multiprocessing.get_context("spawn")
        self._children: list[multiprocessing.process.BaseProcess] = []

    def start(self, count: int) -> None:
        self._children = [self._spawn() for _ in range(count)]

    def keep_alive(self) -> bool:
        """Replace a process that died; False when one could not start (a new one
        would fail alike)."""
        for i, child in enumerate(self._children):
            if child.is_alive():
                continue
            if child.exitcode == STARTUP_FAILED:
                logger.error("an API process could not start; stopping the others")
                return False
            logger.warning(
                "API process %s exited (%s); starting another", child.pid, child.exitcode
            )
            if child.pid is not None:
                # Its gauges (open streams) no longer count; its counters still do.
                metrics.process_gone(child.pid)
            self._children[i] = self._spawn()
        return True

    def stop(self, timeout_s: float) -> None:
        """SIGTERM each (uvicorn drains it), then wait; kill what outlives timeout_s."""
        for child in self._children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in self._children:
            child.join(timeout_s)
            if child.is_alive():
                child.kill()
                child.join()
        self._listening.close()

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        child = self._context.Process(
            target=_serve_in_child, args=(self._host, self._port, self._listening), name="factq-api"
        )
        child.start()
        return child


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
    tasks = list(TaskRegistry.from_settings(settings))
    async with (
        Store.open(settings) as store,
        Broker.open(settings, tasks=tasks, name="factq-preflight"),
    ):
        await store.ping()


def run_dev(host: str, port: int, settings: Settings) -> int:
    """The API and a worker as child processes; the first to exit stops the other."""
    python = [sys.executable, "-m", "factq"]
    api_workers, concurrency = settings.api_workers, settings.concurrency
    api = ["api", "--host", host, "--port", str(port), "--workers", str(api_workers)]
    worker = ["worker", "--concurrency", str(concurrency), "--tasks", settings.worker_tasks]
    worker += ["--metrics-port", str(settings.metrics_port)]
    children = [
        subprocess.Popen([*python, *worker]),
        subprocess.Popen([*python, *api]),
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    logger.info(
        "dev: API on http://%s:%d (docs at /docs) in %d processes, worker with %d; "
        "Ctrl-C stops both",
        host,
        port,
        api_workers,
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
