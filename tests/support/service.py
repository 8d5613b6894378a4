"""factq as real processes: `factq api` and `factq worker`, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from factq.settings import Settings
from tests.support import secrets_watch
from tests.support.procs import Proc, descendants, kill_all, wait_gone

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    base_urls: list[str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    worker_command: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start one process, its output appended to `{name}.log`; stopped on exit."""
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                list(command), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def start_worker(self) -> str:
        """One more `factq worker`, like the first ones; its name, `worker-N`."""
        name = f"worker-{sum(1 for name in self.processes if name.startswith('worker-'))}"
        self.start(name, self.worker_command)
        return name

    def kill(self, name: str) -> None:
        """SIGKILL the process, as the OOM killer or a lost machine would, and reap it."""
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def _served(readiness: dict[str, Any], tasks: list[str], consumers: int) -> bool:
    queues = readiness["tasks"]
    return all(queues[name]["consumers"] >= consumers for name in tasks or queues)


def environment(settings: Settings) -> dict[str, str]:
    """This process's environment, with the settings the test chose as FACTQ_*."""
    env = dict(os.environ)
    chosen = settings.model_fields_set | {
        "namespace",
        "task_modules",
        "worker_tasks",
        "redis_url",
        "amqp_url",
    }
    for name in chosen:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            # As pydantic-settings reads a complex setting: JSON.
            value = json.dumps(settings.model_dump(mode="json", include={name})[name])
        if value is not None:
            env[f"FACTQ_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_dev(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`factq dev` on the port (one pool process), all its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "factq", "dev", "--port", str(port), "--concurrency", "1"],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def running_service(
    settings: Settings,
    logs: Path,
    *,
    workers: int = 1,
    concurrency: int = 2,
    apis: int = 1,
    worker_args: Sequence[str] = (),
) -> Iterator[Service]:
    """Start `apis` API and `workers` worker processes (`factq worker ... worker_args`);
    stop them all with SIGTERM on exit."""
    secrets_watch.remember(settings)
    secrets_watch.log_dirs.add(logs)
    ports = [free_port() for _ in range(apis)]
    factq = [sys.executable, "-m", "factq"]
    service = Service(
        [f"http://127.0.0.1:{port}" for port in ports],
        logs,
        env=environment(settings),
        worker_command=[*factq, "worker", "--concurrency", str(concurrency), *worker_args],
    )
    commands = {f"worker-{i}": service.worker_command for i in range(workers)}
    for i, port in enumerate(ports):
        commands["api" if i == 0 else f"api-{i}"] = [*factq, "api", "--port", str(port)]
    try:
        for name, command in commands.items():
            service.start(name, command)
        _wait_ready(service, consumers=workers, tasks=settings.worker_task_names)
        yield service
    finally:
        for process in service.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in service.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(
    service: Service, *, consumers: int, tasks: list[str], timeout_s: float = 30.0
) -> None:
    """Until every API answers ready, with `consumers` workers on each task's
    queue (of `tasks`, or of every task)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, process in service.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{service.log_text()}")
        try:
            answers = [httpx.get(f"{url}/readyz", timeout=2) for url in service.base_urls]
            if all(r.status_code == 200 and _served(r.json(), tasks, consumers) for r in answers):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"factq did not become ready in {timeout_s} s\n{service.log_text()}")


@contextmanager
def running_service_reaped(
    settings: Settings, logs: Path, *, workers: int = 1, concurrency: int = 2
) -> Iterator[Service]:
    """`running_service`; on exit every process its processes started is gone
    too, such as the pool processes of a worker the test killed."""
    tree: list[Proc] = []
    try:
        with running_service(settings, logs, workers=workers, concurrency=concurrency) as service:
            try:
                yield service
            finally:
                tree = [
                    child
                    for process in service.processes.values()
                    if process.poll() is None
                    for child in descendants(process.pid)
                ]
    finally:
        kill_all(wait_gone(tree, 10))
