"""The load client, the same for factq and for the floors: aiohttp on uvloop, so that
its own CPU per request stays small next to the server's."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp

TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})
JSON_HEADERS: Final = {"Content-Type": "application/json"}
# WebSocket handshakes in flight at once.
CONNECT_CONCURRENCY: Final = 200
FIRST_MESSAGE_TIMEOUT_S: Final = 60.0


def client_session(*, connections: int = 0, timeout_s: float = 60.0) -> aiohttp.ClientSession:
    """A session; `connections` caps the pool (0: none, as thousands of sockets need)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


def job_body(n: int) -> dict[str, Any]:
    return {"task": "factorial", "input": {"n": n}}


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Load:
    """What a run of requests did: how long, what came back, the client's CPU."""

    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def answered(self, status: int) -> int:
        return self.statuses[status]

    def unexpected(self, status: int) -> str:
        """Every answer other than `status`, and every error, in a few words ('' if none)."""
        others = [f"{count} x {code}" for code, count in self.statuses.items() if code != status]
        others += [f"{count} x {name}" for name, count in self.errors.items()]
        return ", ".join(others)


async def post_concurrently(
    http: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    headers: dict[str, str] | None = None,
    latencies: list[float] | None = None,
) -> Load:
    """POST every body, `concurrency` requests at a time, each on a kept-alive connection;
    each request's seconds, answered or not, go to `latencies` when given."""
    load = Load()
    pending = iter(bodies)
    sent_headers = {**JSON_HEADERS, **(headers or {})}

    async def one_client() -> None:
        # A shared iterator: next() never awaits, so no two clients take the same body.
        for body in pending:
            sent = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=sent_headers) as response:
                    await response.read()
                    load.statuses[response.status] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                load.errors[type(exc).__name__] += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - sent)

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - started
    load.client_cpu_s = time.process_time() - cpu
    return load


class Countdown:
    """Set once `count` sockets are connected (or have failed to)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()
        if count == 0:
            self.done.set()

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class SocketClosed(Exception):
    """The server closed the socket (or it failed) before the message expected."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


async def open_socket(
    http: aiohttp.ClientSession, url: str, connecting: asyncio.Semaphore
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Connect, and read the server's first message: a connected client has it."""
    async with connecting:
        socket = await http.ws_connect(url, autoping=True, heartbeat=None)
    message = await socket.receive(timeout=FIRST_MESSAGE_TIMEOUT_S)
    if message.type != aiohttp.WSMsgType.TEXT:
        await socket.close()
        raise SocketClosed(socket.close_code)
    first: dict[str, Any] = json.loads(message.data)
    return socket, first


async def connect_many(
    http: aiohttp.ClientSession, urls: Sequence[str]
) -> tuple[list[aiohttp.ClientWebSocketResponse], Counter[str], float]:
    """Open a socket to each URL; the open ones, the failures by kind, and the seconds taken."""
    connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(open_socket(http, url, connecting) for url in urls), return_exceptions=True
    )
    elapsed = time.perf_counter() - started
    sockets = [result[0] for result in results if isinstance(result, tuple)]
    failures = Counter(type(result).__name__ for result in results if isinstance(result, Exception))
    return sockets, failures, elapsed


async def close_all(sockets: Sequence[aiohttp.ClientWebSocketResponse]) -> None:
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)


@dataclass
class Followed:
    """How one job's socket ended: its final event's push delay, or a close before it."""

    delay_s: float | None = None
    closed_code: int | None = None
    error: str | None = None


def finished_at(job: dict[str, Any]) -> float:
    return datetime.fromisoformat(job["finished_at"]).timestamp()


async def follow_job(
    http: aiohttp.ClientSession, url: str, connecting: asyncio.Semaphore, ready: Countdown
) -> Followed:
    """One subscriber of `WS /v1/jobs/{id}/events`: connect, then wait for the final event."""
    try:
        socket, event = await open_socket(http, url, connecting)
    except SocketClosed as exc:
        ready.tick()
        return Followed(closed_code=exc.code)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        ready.tick()
        return Followed(error=type(exc).__name__)
    ready.tick()
    try:
        while not (event.get("type") == "job" and event["job"]["status"] in TERMINAL):
            message = await socket.receive()
            received = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                return Followed(closed_code=socket.close_code)
            event = json.loads(message.data)
            if event.get("type") == "job" and event["job"]["status"] in TERMINAL:
                return Followed(delay_s=received - finished_at(event["job"]))
        return Followed(delay_s=0.0)  # already final when connected (not expected here)
    finally:
        await socket.close()


async def until_terminal(
    socket: aiohttp.ClientWebSocketResponse,
    job_ids: set[str],
    finals: dict[str, dict[str, Any]],
    on_final: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Read a `/v1/events` socket until every job in `job_ids` has its final state in `finals`."""
    while not job_ids <= finals.keys():
        message = await socket.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise SocketClosed(socket.close_code)
        event = json.loads(message.data)
        if event.get("type") == "error":
            raise RuntimeError(f"/v1/events answered an error: {event}")
        job = event.get("job") or {}
        if job.get("status") in TERMINAL and job["id"] not in finals:
            finals[job["id"]] = job
            if on_final is not None:
                on_final(job)


async def submit_batch(http: aiohttp.ClientSession, base_url: str, ns: list[int]) -> list[str]:
    """POST /v1/jobs/batch of factorials of `ns`; the jobs' ids."""
    body = encoded({"jobs": [job_body(n) for n in ns]})
    async with http.post(f"{base_url}/v1/jobs/batch", data=body, headers=JSON_HEADERS) as response:
        answer = await response.json()
        if response.status != 202:
            raise RuntimeError(f"batch answered {response.status}: {answer}")
    return [job["id"] for job in answer["jobs"]]


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1)
