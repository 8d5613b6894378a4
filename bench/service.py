"""One factq for one workload: `factq api` and `factq worker` processes in a namespace of
their own, the result cache off, deleted (keys and queues) when the workload ends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from bench.config import log, run_async
from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import Service, free_port, running_service

CLEANUP_TIMEOUT_S = 120.0


class Inputs:
    """Distinct inputs for a workload's jobs: n = 20, 21, 22, ..., never one twice."""

    def __init__(self, start: int = 20) -> None:
        self._next = start

    def take(self, count: int) -> list[int]:
        taken = list(range(self._next, self._next + count))
        self._next += count
        return taken


def bench_settings(**overrides: Any) -> Settings:
    """A fresh namespace, no result cache (every job computes), a pool per core."""
    values: dict[str, Any] = {
        "namespace": f"bench-{uuid4().hex[:12]}",
        "task_modules": "",
        "result_cache_ttl_s": 0,
        "concurrency": os.cpu_count() or 1,
    }
    return make_settings(**{**values, **overrides})


@contextmanager
def factq_service(
    *, workers: int = 1, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Iterator[tuple[Service, Settings]]:
    """Start the API and `workers` workers; on exit stop them and delete the namespace.
    `environ`: more variables for their processes (FACTQ_TASK_BATCHING, say)."""
    settings = bench_settings(**overrides)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="factq-bench-") as logs,
            _environment(environ or {}),
            running_service(
                settings, Path(logs), workers=workers, concurrency=settings.concurrency
            ) as service,
        ):
            try:
                yield service, settings
            except BaseException:
                log(f"the service's logs, ends:\n{service.log_text()}")
                raise
    finally:
        try:
            run_async(delete_namespace(settings), CLEANUP_TIMEOUT_S)
        except Exception as exc:
            log(f"could not delete namespace {settings.namespace}: {exc!r}")


@contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """These variables in this process's environment, which the service's processes
    copy, until the service has stopped."""
    # Set after the settings are built: a JSON value read into them would reach
    # the processes in Python's notation (see tests.support.service.environment).
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def private_redis(timeout_s: float = 20.0) -> Iterator[str]:
    """A redis-server of the workload's own, no persistence (as the shared one here is
    configured); its URL. Its command counts are factq's alone."""
    port = free_port()
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory(prefix="factq-bench-redis-") as directory:
        command = [
            executable,
            *("--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"),
            *("--appendonly", "no", "--save", "", "--dir", directory),
            *("--maxclients", "10000"),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            _wait_pong(port, process, timeout_s)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_pong(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"redis-server did not answer on port {port} within {timeout_s:g} s")


def pid_of(service: Service, name: str) -> int:
    return service.processes[name].pid
