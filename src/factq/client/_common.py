"""What the sync and async clients share: configuration, URLs, bodies, and how to wait."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from factq import __version__
from factq.client.errors import (
    ConnectionFailed,
    FactqClientError,
    InvalidRequest,
    NotFound,
    error_from_response,
)
from factq.client.models import Job, JobEvent

DEFAULT_URL: Final = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_TASK: Final = "factorial"
MAX_PAGE_SIZE: Final = 100
RESULT_CHUNK_BYTES: Final = 256 * 1024
SOCKET_OPEN_TIMEOUT_S: Final = 5.0
# A wait stops trying the socket after this many failures in a row without an
# event in between, and only polls from then on; `events()` gives up instead.
MAX_SOCKET_FAILURES: Final = 3
CLOSE_NOT_FOUND: Final = 4404
# Event messages carry the job's summary, never its result, so they stay small.
MAX_EVENT_BYTES: Final = 1024 * 1024

OnUpdate = Callable[[Job], object]


@dataclass(frozen=True)
class Endpoint:
    """Where the service is and how to authenticate, resolved once per client."""

    base_url: str
    api_key: str | None

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None) -> Endpoint:
        """Arguments first, then FACTQ_URL and FACTQ_API_KEY, then the local default."""
        url = base_url or os.environ.get("FACTQ_URL") or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get("FACTQ_API_KEY")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the factq URL must be http(s)://host[:port], not {url!r}")
        return cls(base_url=url.rstrip("/"), api_key=key or None)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"factq-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def socket_headers(self) -> dict[str, str]:
        # The header rather than ?token=, so the key stays out of URLs and logs.
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def events_url(self, job_id: str, after: int | None = None) -> str:
        """The WebSocket URL of the job's events, resuming after `after` when given."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"after": after}) if after is not None else ""
        path = parts.path.rstrip("/") + job_path(job_id, "/events")
        return urlunsplit((scheme, parts.netloc, path, query, ""))


Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[Http]):
    """What the blocking and the asyncio client share: where the service is, how
    to authenticate, the default timeout, and their httpx client."""

    _http_class: type[Http]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._endpoint = Endpoint.resolve(base_url, api_key)
        self._timeout = httpx.Timeout(timeout_s)
        self._http: Http = self._http_class(
            base_url=self._endpoint.base_url,
            headers=self._endpoint.headers(),
            timeout=self._timeout,
        )

    @property
    def base_url(self) -> str:
        """The service's base URL, e.g. http://127.0.0.1:8000."""
        return self._endpoint.base_url

    def events_url(self, job_id: str, *, after: int | None = None) -> str:
        """The WebSocket URL of a job's events."""
        return self._endpoint.events_url(job_id, after)


def job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise ValueError("a job id must not be empty")
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def submit_body(
    task: str,
    input: Mapping[str, Any],
    *,
    deadline_s: float | None = None,
    webhook: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task, "input": dict(input)}
    if deadline_s is not None:
        body["deadline_s"] = deadline_s
    if webhook is not None:
        body["webhook"] = dict(webhook)
    return body


def batch_body(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Each item is a submit body; its task defaults to the factorial."""
    return {"jobs": [{"task": DEFAULT_TASK, **item} for item in items]}


def submit_headers(wait_s: float | None, idempotency_key: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if wait_s is not None:
        headers["Prefer"] = f"wait={wait_s:g}"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def submit_timeout(timeout: httpx.Timeout, wait_s: float | None) -> httpx.Timeout:
    """The client's timeout, with room for the server to hold the answer `wait_s` seconds."""
    if wait_s is None:
        return timeout
    read = None if timeout.read is None else timeout.read + max(wait_s, 0.0)
    return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def list_params(status: str | None, limit: int, cursor: str | None) -> dict[str, str | int]:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit is the page size, from 1 to {MAX_PAGE_SIZE}, not {limit}")
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = str(status)
    if cursor is not None:
        params["cursor"] = cursor
    return params


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed error of an error response; its body must have been read."""
    if response.is_success:
        return
    raise error_from_response(response)


def parse_job(response: httpx.Response) -> Job:
    raise_for_error(response)
    return Job.model_validate_json(response.content)


def parse_jobs(response: httpx.Response) -> tuple[list[Job], str | None]:
    """The jobs of a page or a batch, and the next page's cursor."""
    raise_for_error(response)
    payload = response.json()
    jobs = [Job.model_validate(job) for job in payload["jobs"]]
    return jobs, payload.get("next_cursor")


@contextlib.contextmanager
def transport_errors(base_url: str) -> Iterator[None]:
    """httpx's transport errors become ConnectionFailed, at this one edge."""
    try:
        yield
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        raise ConnectionFailed(f"cannot reach factq at {base_url}: {reason}") from exc


class SocketLost(Exception):
    """The event socket failed or closed before the job ended; the caller may resume."""


def _socket_error(message: str | bytes) -> dict[str, Any]:
    """The `error` of an error message (`{"type": "error", "error": {...}}`), else {}."""
    try:
        data = json.loads(message)
    except ValueError:
        return {}
    error: Any = (
        data.get("error") if isinstance(data, dict) and data.get("type") == "error" else None
    )
    return dict(error) if isinstance(error, dict) else {}


class SocketReader:
    """Checks one event socket's messages and how it ended, for either client."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.is_finished = False

    def parse(self, message: str | bytes) -> JobEvent | None:
        try:
            event = JobEvent.model_validate_json(message)
        except ValidationError as exc:
            refusal = _socket_error(message)
            if refusal.get("type") == "invalid_request":
                # A bad parameter (the server closes with 4400): retrying will not help.
                raise InvalidRequest(
                    str(refusal.get("message") or "invalid request"), error_type="invalid_request"
                ) from None
            raise SocketLost(f"unexpected message on the event socket: {exc}") from exc
        if event.type != "job":
            return None
        self.is_finished = event.job.status.is_terminal
        return event

    def failed(self, exc: Exception) -> FactqClientError | SocketLost:
        """What a socket's exception means: a typed error to raise, or a lost socket."""
        if isinstance(exc, InvalidStatus) and 400 <= exc.response.status_code < 500:
            # Refused at the handshake (a bad key, say): retrying will not help.
            return error_from_response(
                httpx.Response(
                    exc.response.status_code,
                    headers=list(exc.response.headers.raw_items()),
                    content=bytes(exc.response.body or b""),
                )
            )
        if isinstance(exc, ConnectionClosed) and exc.rcvd and exc.rcvd.code == CLOSE_NOT_FOUND:
            return NotFound(
                exc.rcvd.reason or f"no job with id {self.job_id!r}",
                status_code=404,
                error_type="not_found",
            )
        return SocketLost(str(exc) or type(exc).__name__)

    def closed(self) -> None:
        """A clean close is the end only once the job has finished."""
        if not self.is_finished:
            raise SocketLost("the event socket closed before the job finished")


# What a socket can fail with, short of cancellation: OSError covers refused
# connections and open timeouts, WebSocketException the handshake and closes.
SOCKET_ERRORS: Final = (OSError, WebSocketException)


class Backoff:
    """Exponential delays with jitter, so that many clients do not retry in step."""

    def __init__(self, first_s: float = 0.1, max_s: float = 2.0) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self._max_s, self._first_s * 2.0**self._attempt)
        self._attempt += 1
        return delay * random.uniform(0.5, 1.0)


class WaitState:
    """What one wait has learned: the last event, the last job, whether to try the socket."""

    def __init__(self, on_update: OnUpdate | None) -> None:
        self.after: int | None = None
        self.job: Job | None = None
        self.backoff = Backoff()
        self._on_update = on_update
        self._socket_failures = 0

    @property
    def should_use_socket(self) -> bool:
        return self._socket_failures < MAX_SOCKET_FAILURES

    def saw_event(self, event: JobEvent) -> bool:
        """Record an event; true when the job has ended."""
        self._socket_failures = 0
        self.backoff.reset()
        if self.after is not None and event.seq <= self.after:
            return False
        self.after = event.seq
        self._update(event.job)
        return event.job.status.is_terminal

    def socket_lost(self) -> None:
        self._socket_failures += 1

    def saw_poll(self, job: Job) -> bool:
        """Record a polled state; true when the job has ended."""
        self._update(job)
        return job.status.is_terminal

    def _update(self, job: Job) -> None:
        changed = job != self.job
        self.job = job
        if changed and self._on_update is not None:
            self._on_update(job)


class EventsState:
    """Where `events()` resumes, and when it gives up on the socket."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.backoff = Backoff()
        self._failures = 0

    def is_new(self, event: JobEvent) -> bool:
        self._failures = 0
        self.backoff.reset()
        if self.after is not None and event.seq <= self.after:
            return False
        self.after = event.seq
        return True

    def lost(self, exc: SocketLost, url: str) -> None:
        self._failures += 1
        if self._failures >= MAX_SOCKET_FAILURES:
            raise ConnectionFailed(f"cannot follow events at {url}: {exc}") from exc


class BinaryWriter(Protocol):
    """Anything with a `write(bytes)`: an open binary file, `sys.stdout.buffer`, BytesIO."""

    def write(self, data: bytes, /) -> object: ...


Destination = str | os.PathLike[str] | BinaryWriter


def part_path(path: Path) -> Path:
    """A sibling to write into first, so a failed download never leaves a partial file."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")


def write_chunks(chunks: Iterable[bytes], to: Destination) -> int:
    """Write every chunk to a path (replaced only once complete) or a file; the bytes written."""
    if not isinstance(to, str | os.PathLike):
        return sum(_write(to, chunk) for chunk in chunks)
    path = Path(to)
    part = part_path(path)
    try:
        with part.open("xb") as file:
            written = sum(_write(file, chunk) for chunk in chunks)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def _write(file: BinaryWriter, chunk: bytes) -> int:
    file.write(chunk)
    return len(chunk)
