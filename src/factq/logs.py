"""Logging for the factq processes: no secret ever reaches a log line."""

from __future__ import annotations

import logging
import re

from factq.settings import LogLevel

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
    """One format for factq's own lines."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def redact_server_logs() -> None:
    """Mask keys in uvicorn's connection lines (call after uvicorn set up its logging)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactSecrets())
