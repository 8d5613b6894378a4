"""`factq api --workers N`: N processes serve one port; one that dies is replaced;
SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import environment, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def api_settings() -> Iterator[Settings]:
    settings = make_settings(shutdown_grace_s=5.0)
    yield settings
    asyncio.run(delete_namespace(settings))


def poll(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def children_of(pid: int) -> set[int]:
    """The API processes the parent spawned (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = {int(child) for child in path.read_text().split()} if path.exists() else set()
    return {child for child in children if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_several_api_processes_serve_one_port_and_stop_together(
    api_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "api.log", "wb") as log:
        parent = subprocess.Popen(
            [sys.executable, "-m", "factq", "api", "--port", str(port), "--workers", "2"],
            env=environment(api_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        poll(lambda: answers(f"{base_url}/readyz"), "the API to answer")
        first = children_of(parent.pid)
        assert len(first) == 2
        # Each answers: a new connection per request lands on either.
        for _ in range(10):
            assert httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200
        lost = min(first)
        os.kill(lost, signal.SIGKILL)
        poll(
            lambda: lost not in (now := children_of(parent.pid)) and len(now) == 2,
            "a replacement API process",
        )
        poll(lambda: answers(f"{base_url}/readyz"), "the API to answer again")
        serving = children_of(parent.pid)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in serving)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert "serving the API with 2 processes" in (tmp_path / "api.log").read_text()
