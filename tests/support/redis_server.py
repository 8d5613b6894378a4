"""A private redis-server for one test, with AOF fsynced on every write, that can be
killed with SIGKILL and started again on the same port and directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.service import free_port

START_TIMEOUT_S = 30.0


class RedisServer:
    """`redis-server --appendonly yes --appendfsync always`: a write it answered survives a kill."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (loading the AOF left by an earlier run) and wait until it answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        command = [
            executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only what the AOF holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def _wait_ready(self) -> None:
        """Until PING answers PONG (not LOADING): the AOF is loaded."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"redis-server did not answer on port {self.port} in {START_TIMEOUT_S} s"
        )


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, killed on exit whatever happened."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, free_port())
    try:
        server.start()
        yield server
    finally:
        server.kill()
