"""Everything of the two clients but their I/O, in the sans-I/O style of h11.

Requests are built here as data (`Call`) and their answers read here; what a
wait or an event stream does next is decided here (`Watch`, `SocketReader`,
`Deadline`), and how a download lands in its file (`Download`). `Client` and
`AsyncClient` only send, receive, sleep and write, each in its own way.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    WebSocketException,
)

from factq import __version__
from factq.client.errors import (
    ConnectionFailed,
    FactqClientError,
    InvalidRequest,
    NotFound,
    WaitTimeout,
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
T = TypeVar("T")


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


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request as data, and how to read its answer: a client only sends it."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    # How long the server may hold the answer (`Prefer: wait`): the read timeout grows by it.
    wait_s: float | None = None


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

    def _build(self, call: Call[Any]) -> httpx.Request:
        """The httpx request of a call, for the client to send."""
        return self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            headers=call.headers,
            timeout=submit_timeout(self._timeout, call.wait_s),
        )


def job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise ValueError("a job id must not be empty")
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def submit_call(
    task: str,
    input: Mapping[str, Any] | None,
    wait_s: float | None,
    idempotency_key: str | None,
    deadline_s: float | None,
    webhook: Mapping[str, Any] | None,
    /,
) -> Call[Job]:
    """`submit()`'s request, its arguments in the same order."""
    body: dict[str, Any] = {"task": task, "input": dict(input or {})}
    if deadline_s is not None:
        body["deadline_s"] = deadline_s
    if webhook is not None:
        body["webhook"] = dict(webhook)
    headers: dict[str, str] = {}
    if wait_s is not None:
        headers["Prefer"] = f"wait={wait_s:g}"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return Call("POST", "/v1/jobs", parse_job, json=body, headers=headers, wait_s=wait_s)


def batch_call(items: Iterable[Mapping[str, Any]]) -> Call[list[Job]]:
    """Each item is a submit body; its task defaults to the factorial."""
    body = {"jobs": [{"task": DEFAULT_TASK, **item} for item in items]}
    return Call("POST", "/v1/jobs/batch", lambda response: parse_jobs(response)[0], json=body)


def get_call(job_id: str) -> Call[Job]:
    return Call("GET", job_path(job_id), parse_job)


def cancel_call(job_id: str) -> Call[Job]:
    return Call("POST", job_path(job_id, "/cancel"), parse_job)


def delete_call(job_id: str) -> Call[None]:
    return Call("DELETE", job_path(job_id), raise_for_error)


def result_call(job_id: str, format: str | None) -> Call[None]:
    """The full result, to stream: reading the answer raises for an error (body read first)."""
    params = {"format": format} if format is not None else None
    return Call("GET", job_path(job_id, "/result"), raise_for_error, params=params)


def result_int_call(job_id: str) -> Call[int]:
    return Call("GET", job_path(job_id, "/result"), _hex_int, params={"format": "hex"})


def _hex_int(response: httpx.Response) -> int:
    raise_for_error(response)
    # Base 16 converts in linear time and has no digit limit, unlike int(str).
    return int(response.content, 16)


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


class JobPages:
    """The calls of `list()`: one a page, each made only once the one before it is read."""

    def __init__(self, status: str | None, limit: int) -> None:
        self._status = status
        self._limit = limit
        self._cursor: str | None = None
        self._last = False

    def __iter__(self) -> Iterator[Call[list[Job]]]:
        while not self._last:
            params = list_params(self._status, self._limit, self._cursor)
            yield Call("GET", "/v1/jobs", self._read, params=params)

    def _read(self, response: httpx.Response) -> list[Job]:
        jobs, self._cursor = parse_jobs(response)
        self._last = self._cursor is None
        return jobs


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


def wait_timeout(job_id: str, timeout_s: float | None) -> WaitTimeout:
    """The error of a wait that ran past its timeout_s (None: past a deadline it was given)."""
    when = "before its deadline" if timeout_s is None else f"within {timeout_s:g} s"
    return WaitTimeout(f"job {job_id} did not finish {when}")


class Deadline:
    """When a blocking wait must give up; no timeout, never."""

    def __init__(self, job_id: str, timeout_s: float | None) -> None:
        self._job_id = job_id
        self._timeout_s = timeout_s
        self._at = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._at is None else max(self._at - time.monotonic(), 0.0)

    def clamp(self, seconds: float) -> float:
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    def check(self) -> None:
        if self._at is not None and time.monotonic() >= self._at:
            raise wait_timeout(self._job_id, self._timeout_s)


class SocketLost(Exception):
    """The event socket failed or closed before the job ended; the caller may resume."""


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


class Watch:
    """What one wait or event stream has learned of its job: the last event's seq
    (where a new socket resumes), the job as last seen, and how the socket fares."""

    def __init__(self, after: int | None = None, on_update: OnUpdate | None = None) -> None:
        self.after = after
        self.job: Job | None = None
        self.backoff = Backoff()
        self._on_update = on_update
        self._socket_failures = 0

    @property
    def final(self) -> Job | None:
        """The job once it has ended; None before."""
        return self.job if self.job is not None and self.job.status.is_terminal else None

    @property
    def should_use_socket(self) -> bool:
        return self._socket_failures < MAX_SOCKET_FAILURES

    def saw_event(self, event: JobEvent) -> bool:
        """Record an event; true when it is new (after `after`)."""
        self._socket_failures = 0
        self.backoff.reset()
        if self.after is not None and event.seq <= self.after:
            return False
        self.after = event.seq
        self._update(event.job)
        return True

    def saw_poll(self, job: Job) -> bool:
        """Record a polled state; true when the job has ended."""
        self._update(job)
        return job.status.is_terminal

    def socket_lost(self) -> None:
        """For a wait: after MAX_SOCKET_FAILURES in a row, should_use_socket turns false."""
        self._socket_failures += 1

    def events_lost(self, exc: SocketLost, url: str) -> float:
        """For `events()`: how long to pause before the next socket; ConnectionFailed once
        MAX_SOCKET_FAILURES in a row have failed."""
        self.socket_lost()
        if not self.should_use_socket:
            raise ConnectionFailed(f"cannot follow events at {url}: {exc}") from exc
        return self.backoff.next_delay()

    def _update(self, job: Job) -> None:
        changed = job != self.job
        self.job = job
        if changed and self._on_update is not None:
            self._on_update(job)


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
    """One event socket of a watch: its messages, and what its end means."""

    def __init__(self, job_id: str, watch: Watch) -> None:
        self.job_id = job_id
        self.is_finished = False
        self._watch = watch

    def parse(self, message: str | bytes) -> list[JobEvent]:
        """The message's event when it is a new one of the job (the watch records it)."""
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
            return []
        self.is_finished = event.job.status.is_terminal
        return [event] if self._watch.saw_event(event) else []

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around the socket's whole life: a clean close is its end (SocketLost unless the
        job has finished); its errors become a typed error, or SocketLost to resume."""
        try:
            yield
        except ConnectionClosedOK:
            pass
        except WaitTimeout:
            raise
        except SOCKET_ERRORS as exc:
            raise self.failed(exc) from exc
        if not self.is_finished:
            raise SocketLost("the event socket closed before the job finished")

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


class BinaryWriter(Protocol):
    """Anything with a `write(bytes)`: an open binary file, `sys.stdout.buffer`, BytesIO."""

    def write(self, data: bytes, /) -> object: ...


Destination = str | os.PathLike[str] | BinaryWriter


def part_path(path: Path) -> Path:
    """A sibling to write into first, so a failed download never leaves a partial file."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")


class Download:
    """Where a streamed result goes: a file given is written as it is; a path is written
    through a part file beside it, renamed onto the path once complete. Each step blocks
    (the asyncio client runs them in a thread); open one with `downloading()`."""

    def __init__(self, to: Destination) -> None:
        self.written = 0
        self._file: BinaryWriter | None = None
        self._part_file: IO[bytes] | None = None
        # (part, path) for a path; None for a file given.
        self._paths: tuple[Path, Path] | None = None
        if isinstance(to, str | os.PathLike):
            path = Path(to)
            self._paths = (part_path(path), path)
        else:
            self._file = to

    def open(self) -> None:
        """Create the part file, for a path."""
        if self._paths is not None:
            self._file = self._part_file = self._paths[0].open("xb")

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "open() comes first"
        self._file.write(chunk)
        self.written += len(chunk)

    def finish(self) -> int:
        """Close the part file and put it in the path's place; the bytes written."""
        if self._paths is not None and self._part_file is not None:
            self._part_file.close()
            os.replace(*self._paths)
        return self.written

    def discard(self) -> None:
        """After a failure: close and remove the part file, so that none is left."""
        if self._part_file is not None:
            self._part_file.close()
        if self._paths is not None:
            self._paths[0].unlink(missing_ok=True)


@contextlib.contextmanager
def downloading(to: Destination) -> Iterator[Download]:
    """A download to `to`, discarded if anything fails before the `with` ends."""
    download = Download(to)
    try:
        yield download
    except BaseException:
        download.discard()
        raise


def write_chunks(chunks: Iterable[bytes], to: Destination) -> int:
    """Write every chunk to a path (replaced only once complete) or a file; the bytes written."""
    with downloading(to) as download:
        download.open()
        for chunk in chunks:
            download.write(chunk)
        return download.finish()
