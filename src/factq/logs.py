"""Logging for the factq processes: one line format for all, and no secret in any line."""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from factq.settings import LogLevel

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


def configure_logging(level: LogLevel) -> None:
    """One format for every line of the process: factq's, uvicorn's, the libraries' and warnings."""
    # The line names no file, line, thread or process: skip gathering them
    # (the optimisations of the logging HOWTO). Finding the caller walks the
    # stack on every record, and a server logs a line per request and socket.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(True)
    route_server_logs()


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
