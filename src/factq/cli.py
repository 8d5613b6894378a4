"""`factq api | worker | dev` (and the job commands, from cli_jobs): parse flags, run one thing."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError

from factq import cli_jobs
from factq.broker import Broker
from factq.errors import FactqError
from factq.logs import configure_logging, redact_server_logs
from factq.settings import Settings
from factq.store import Store

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("factq")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
WS_PING_INTERVAL_S = 20.0
WS_MAX_MESSAGE_BYTES = 64 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factq",
        description="Slow computations behind a queue. Settings come from FACTQ_* "
        "environment variables (see the README); flags override them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = commands.add_parser("api", help="serve the HTTP API", description="Serve the HTTP API.")
    _add_server_flags(api)

    worker = commands.add_parser(
        "worker", help="run jobs from the queue", description="Consume jobs and run them."
    )
    _add_worker_flags(worker)

    dev = commands.add_parser(
        "dev",
        help="API and one worker together, for a local machine",
        description="Run the API and one worker as two processes; Ctrl-C stops both.",
    )
    _add_server_flags(dev)
    _add_worker_flags(dev)
    cli_jobs.add_job_commands(commands)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pool processes, i.e. jobs run at once (default FACTQ_CONCURRENCY, else the cores)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in cli_jobs.JOB_COMMANDS:
        return cli_jobs.run(args)
    overrides: dict[str, Any] = {}
    if getattr(args, "concurrency", None) is not None:
        overrides["concurrency"] = args.concurrency
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"factq: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "dev":
        return run_dev(args.host, args.port, settings.concurrency)
    try:
        if args.command == "api":
            return run_api(settings, args.host, args.port)
        return asyncio.run(run_worker(settings))
    except FactqError as exc:
        logger.error("cannot start: %s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 130


def run_api(settings: Settings, host: str, port: int) -> int:
    """Serve the API until SIGINT or SIGTERM; uvicorn drains open requests."""
    from factq.api import create_app

    asyncio.run(_preflight(settings))
    server = uvicorn.Server(server_config(create_app(settings), settings, host, port))
    redact_server_logs()
    server.run()
    return 0 if server.started else 3


def server_config(
    app: FastAPI, settings: Settings, host: str, port: int, *, log_level: str | None = None
) -> uvicorn.Config:
    """How uvicorn serves the API: the WebSocket limits are part of the contract."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level or settings.log_level,
        lifespan="on",
        proxy_headers=True,
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


async def run_worker(settings: Settings) -> int:
    """Consume until SIGINT or SIGTERM, then finish held jobs within the grace period."""
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
    print(
        f"factq dev: API on http://{host}:{port} (docs at /docs), worker with "
        f"{concurrency} processes; Ctrl-C stops both",
        file=sys.stderr,
        flush=True,
    )
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [child.wait() for child in children]
    failed = [code for code in codes if code not in (0, -signal.SIGTERM)]
    return 0 if stopping or not failed else failed[0]


if __name__ == "__main__":
    sys.exit(main())
