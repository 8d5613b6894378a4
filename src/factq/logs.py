"""Logging for the factq processes: one line format for all, and no secret in any line."""

from __future__ import annotations

import logging
import re
from typing import Final

from factq.settings import LogLevel

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn logs its server lines on uvicorn.error and one line per request on uvicorn.access.
SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")

# `?token=<key>` on WebSocket URLs, which uvicorn logs with the path.
_TOKEN = re.compile(r"(token=)[^&\s\"']+")
_REDACTED = r"\1[redacted]"


class RedactSecrets(logging.Filter):
    """Masks API keys given in query strings before a record is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TOKEN.sub(_REDACTED, record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN.sub(_REDACTED, arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def configure_logging(level: LogLevel) -> None:
    """One format for every line of the process: factq's, uvicorn's, the libraries' and warnings."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
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
