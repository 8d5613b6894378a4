"""The floors' servers: what FastAPI and uvicorn do with nothing of factq behind them.

Each runs under uvicorn in its own process, one worker, with the HTTP and
WebSocket implementations factq's API gets (httptools, uvicorn's `auto`
WebSockets, uvloop), and no access log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from factq.schema import JobRequest

ROOT: Final = Path(__file__).resolve().parents[1]
# As factq's API serves its sockets (factq.cli.serve.server_config).
WS_PING_INTERVAL_S: Final = 20
WS_MAX_MESSAGE_BYTES: Final = 64 * 1024
# The one message of the WebSocket floor: about the size of a queued job's event.
FIRST_EVENT: Final = json.dumps(
    {
        "type": "job",
        "seq": 1,
        "job": {
            "id": "0" * 32,
            "task": "factorial",
            "input": {"n": 20},
            "status": "queued",
            "progress": None,
            "cancel_requested": False,
            "created_at": "2026-01-01T00:00:00.000000Z",
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "error": None,
            "result": None,
            "metrics": {"queue_s": None, "run_s": None},
        },
    }
)


def http_app() -> FastAPI:
    """`POST /v1/jobs` that validates factq's own body model and answers 202, and no more."""
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit(job: JobRequest) -> JSONResponse:
        return JSONResponse(
            {"id": secrets.token_hex(16), "task": job.task, "status": "queued"}, status_code=202
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept a WebSocket, send it one JSON message, then hold it until the client leaves."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": FIRST_EVENT})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    app: str, *, factory: bool = False, timeout_s: float = 20.0
) -> Iterator[tuple[int, int]]:
    """Run `module:app` under uvicorn in its own process; its port and pid. Stopped on exit."""
    port = free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools", "--ws", "auto", "--lifespan", "off"),
        *("--ws-ping-interval", str(WS_PING_INTERVAL_S)),
        *("--ws-ping-timeout", str(WS_PING_INTERVAL_S)),
        *("--ws-max-size", str(WS_MAX_MESSAGE_BYTES)),
        *("--no-access-log", "--log-level", "warning"),
        *(["--factory"] if factory else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port, process, timeout_s)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"uvicorn did not listen on port {port} within {timeout_s:g} s")
