"""Slow and greedy clients against a real `factq api`: a request head that takes too
long is closed, the connections of a process are capped, and the others are
served all the while."""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from factq.settings import Settings
from tests.support.service import Service, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SLOW = 1000
HEAD_START = b"POST /v1/jobs HTTP/1.1\r\nHost: factq\r\n"


@contextmanager
def connections(
    service: Service, count: int, first_bytes: bytes = b""
) -> Iterator[list[socket.socket]]:
    """`count` open connections to the API, each having sent `first_bytes`."""
    url = urlsplit(service.base_url)
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((url.hostname, url.port)))
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened


class Closed(dict[socket.socket, bytes]):
    """What each closed connection received, and when it was seen closed."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[socket.socket, float] = {}


def wait_until_closed(
    sockets: list[socket.socket], timeout_s: float, *, count: int | None = None
) -> Closed:
    """What each connection received until the server closed it, once `count` of
    them (all, by default) are closed."""
    count = len(sockets) if count is None else count
    received = {sock: b"" for sock in sockets}
    closed = Closed()
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ, data=sock)
        deadline = time.monotonic() + timeout_s
        while len(closed) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(closed)} of {len(sockets)} connections closed"
            for key, _ in selector.select(remaining):
                sock = key.data
                data = sock.recv(65536)
                received[sock] += data
                if not data:
                    selector.unregister(sock)
                    closed[sock] = received[sock]
                    closed.times[sock] = time.monotonic()
    return closed


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_slow_request_heads_are_closed_while_others_are_served(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    timeout_s = 4.0
    settings = settings_factory(header_timeout_s=timeout_s)
    with running_service(settings, tmp_path, workers=0) as service:
        before_opening = time.monotonic()
        with (
            connections(service, SLOW, HEAD_START) as slow,
            httpx.Client(base_url=service.base_url, timeout=5) as http,
        ):
            job = {"task": "factorial", "input": {"n": 10}}
            for _ in range(5):
                health, health_s = timed(lambda: http.get("/healthz"))
                submitted, submit_s = timed(lambda: http.post("/v1/jobs", json=job))
                assert health.status_code == 200 and health_s < 1.0
                assert submitted.status_code == 202 and submit_s < 1.0
            # One more header line, well into the deadline, buys no more time:
            # the head as a whole has the deadline, not each line.
            dripped_at = before_opening + timeout_s - 1.5
            while time.monotonic() < dripped_at:
                time.sleep(0.02)
            slow[0].sendall(b"X-Drip: 1\r\n")
            closed = wait_until_closed(slow, timeout_s=30)
        assert set(closed.values()) == {b""}  # closed, never answered
        assert min(closed.times.values()) - before_opening >= timeout_s - 0.5
        # Reset by the line, it would have lasted until dripped_at + timeout_s.
        assert closed.times[slow[0]] - before_opening < timeout_s + 1.5
    api_log = (tmp_path / "api.log").read_text()
    assert "Traceback" not in api_log


def test_a_keep_alive_connection_that_sends_no_head_is_closed(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(header_timeout_s=2.0)
    with running_service(settings, tmp_path, workers=0) as service:
        with connections(service, 1) as (sock,):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: factq\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            # Bytes that start no request (a bare CRLF) once its answer is in.
            sock.sendall(b"\r\n")
            closed = wait_until_closed([sock], timeout_s=10)
        # Closed (at most the rest of the answer read before), never answered again.
        assert closed[sock].count(b"HTTP/1.1") == 0


def test_connections_past_the_cap_are_refused_with_a_503(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(max_connections=20)
    with running_service(settings, tmp_path, workers=0) as service:
        with connections(service, 25) as opened:
            refused = wait_until_closed(opened, timeout_s=10, count=5)
            for answer in refused.values():
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 503")
                assert b"retry-after: 1" in head.lower()
                assert json.loads(body)["error"]["type"] == "unavailable"
            # Those let in are served, and there are no more than the cap.
            kept = [sock for sock in opened if sock not in refused]
            assert len(kept) <= 20
            for sock in kept:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: factq\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # The connections gone, the process serves new ones again.
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{service.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not serve again"
            time.sleep(0.05)


def test_the_api_raises_its_open_file_limit_to_the_hard_limit(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_service(settings_factory(), tmp_path, workers=0) as service:
        limits = Path(f"/proc/{service.processes['api'].pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard
