"""Logging for the factq processes: one line format for all, and no secret in any line.

`text` lines are for people; `json` lines (`FACTQ_LOG_FORMAT=json`) are one
object each, for a log pipeline, with the job and the request a line is about
as fields of their own: `grep <job id>` over the API's and the workers' lines
follows one job from its submission to its end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from factq.settings import LogFormat, LogLevel

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn logs its server lines on uvicorn.error and one line per request on uvicorn.access.
SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")

# `?token=<key>` on WebSocket URLs, which uvicorn logs with the path.
_TOKEN = re.compile(r"(token=)[^&\s\"']+")
# An absolute URL (a webhook's, in the HTTP client's own lines): its user and
# password, query and fragment may carry credentials.
_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s\"'?#]*@)?(?P<rest>[^\s\"'?#]*)"
    r"(?P<query>\?[^\s\"'#]*)?(?P<fragment>#[^\s\"']*)?"
)


def _redact_url(match: re.Match[str]) -> str:
    return "".join(
        (
            match["scheme"],
            "***@" if match["user"] else "",
            match["rest"],
            "?***" if match["query"] else "",
            "#***" if match["fragment"] else "",
        )
    )


def redact(line: str) -> str:
    """The line with keys in query strings and credentials in URLs masked."""
    if "token=" not in line and "://" not in line:
        return line  # most lines: neither pattern can match
    return _TOKEN.sub(r"\1[redacted]", _URL.sub(_redact_url, line))


class RedactSecrets(logging.Filter):
    """Masks API keys given in query strings, and the user, password and query of
    absolute URLs, before a record is formatted (its arguments merged in first:
    the HTTP client logs a URL object, not a string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # left for logging to report, as it would
        record.msg = redact(message)
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """factq's line format, masked as `redact` does, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# The job and the request that the code running now is about: set around a
# request in the API and around a job's run in a worker (`log_context`); the
# JSON lines show them. Context variables, so that each request's and each
# job's asyncio task sees its own.
_job_id: ContextVar[str | None] = ContextVar("factq_job_id", default=None)
_request_id: ContextVar[str | None] = ContextVar("factq_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, where there is one."""
    return _request_id.get()


@contextlib.contextmanager
def log_context(*, job_id: str | None = None, request_id: str | None = None) -> Iterator[None]:
    """Within the block, lines are about this job and this request (those given)."""
    tokens = [
        var.set(value)
        for var, value in ((_job_id, job_id), (_request_id, request_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for token in reversed(tokens):
            token.var.reset(token)


# What every record has; any other attribute is a field its caller gave (`extra=`),
# but uvicorn's `color_message`, the message again with terminal colours.
_RECORD_ATTRIBUTES: Final = frozenset(
    (*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName", "color_message")
)
_CORE_FIELDS: Final = ("time", "level", "logger", "message")


class JsonLines(logging.Formatter):
    """One JSON object a line: `time` (ISO 8601, UTC), `level`, `logger`,
    `message`; `request_id` and `job_id` where the line is about one (its
    context's, or given with `extra=`); any other field given with `extra=`
    that is not None; a traceback as `exception`. Every string in it is masked
    as `redact` does; a traceback's newlines are escaped: one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": "",
        }
        line["message"] = redact(_message(record, line))
        # Set where they are checked: a job id is factq's, a request id one
        # that `factq.api.request_ids` let through.
        if (request_id := _request_id.get()) is not None:
            line["request_id"] = request_id
        if (job_id := _job_id.get()) is not None:
            line["job_id"] = job_id
        # Those given with `extra=`, in a stable order; none replaces a core field.
        for name in sorted(record.__dict__.keys() - _RECORD_ATTRIBUTES):
            value = record.__dict__[name]
            if value is not None and name not in _CORE_FIELDS:
                line[name] = _masked(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line)


def _utc_time(record: logging.LogRecord) -> str:
    """When the record was made, as `2026-11-24T22:30:00.123Z`."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _message(record: logging.LogRecord, line: dict[str, Any]) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError) as exc:
        # Arguments that do not fit the message: still one line, with what came.
        line["format_error"] = redact(f"{type(exc).__name__}: {exc}; arguments {record.args!r}")
        return str(record.msg)


def _masked(value: Any) -> Any:
    """The value with every string masked (`redact`); what JSON has no type for, as text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {redact(str(key)): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(item) for item in value]
    return redact(str(value))


def configure_logging(level: LogLevel, log_format: LogFormat = "text") -> None:
    """One format for every line of the process: factq's, uvicorn's, the
    libraries', warnings, and with `json` uncaught exceptions too."""
    # The line names no file, line, thread or process: skip gathering them
    # (the optimisations of the logging HOWTO). Finding the caller walks the
    # stack on every record, and a server logs a line per request and socket.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else RedactingFormatter(LOG_FORMAT))
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(True)
    route_server_logs()
    if log_format == "json":
        # Python writes these to stderr itself, in lines of its own.
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
        sys.unraisablehook = _log_unraisable


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("factq").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # what threading's own hook ignores too
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (
        (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
    )
    logging.getLogger("factq").error("uncaught exception in thread %s", name, exc_info=exc_info)


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    what = unraisable.err_msg or "Exception ignored in"
    try:
        where = repr(unraisable.object)
    except Exception:
        where = "<object repr() failed>"
    exc_info = (
        (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        if unraisable.exc_value is not None
        else None
    )
    logging.getLogger("factq").error("%s: %s", what, where, exc_info=exc_info)


def route_server_logs() -> None:
    """Send uvicorn's lines, access lines included, on to the root logger's handlers, keys masked.

    For a server run with `log_config=None`, so that uvicorn adds no handler of its own.
    """
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = True
        # A logger's filter applies before any handler sees the record, wherever the
        # handler sits; once is enough, however many servers a process configures.
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())


def redact_url(url: str) -> str:
    """The URL as it may be shown or logged: user, password, query and fragment,
    which may carry credentials, replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            "***" if parts.query else "",
            "***" if parts.fragment else "",
        )
    )
