"""No secret in any log line of the whole test run.

Every secret the tests configure (API keys, worker tokens, webhook secrets,
credentials in service URLs) is remembered as settings are made; every log
record of this process is kept, and every service the tests start logs to a
file; at the end of the session all of them are searched for every secret.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from factq.settings import Settings

# Shorter values ("k1") are test fixtures too common as text to search for.
MIN_SECRET_LENGTH = 8

secrets: set[str] = set()
log_dirs: set[Path] = set()


def remember(settings: Settings) -> None:
    """Note the secrets in settings that a test is about to use."""
    values = [
        *settings.api_key_list,
        settings.worker_token.get_secret_value(),
        settings.webhook_secret.get_secret_value(),
    ]
    for url in (settings.redis_url, settings.amqp_url):
        parts = urlsplit(url.get_secret_value())
        if parts.password:
            # The credentials as a URL carries them: "guest" alone is a user name too.
            values.append(f"{parts.username or ''}:{parts.password}@")
    secrets.update(value for value in values if len(value) >= MIN_SECRET_LENGTH)


def remember_values(*values: str) -> None:
    """Note secrets a test uses that no setting holds (a webhook URL's credentials)."""
    secrets.update(value for value in values if len(value) >= MIN_SECRET_LENGTH)


class LogRecorder(logging.Handler):
    """Keeps every record's formatted line (with its traceback) for the end."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is no log line
            self.handleError(record)


def leaks(lines: list[str]) -> list[str]:
    """Where a remembered secret shows: in this process's records or a service log."""
    found = [f"log record: {line[:200]!r}" for line in lines if any(s in line for s in secrets)]
    for folder in sorted(log_dirs):
        for path in sorted(folder.glob("*.log")) if folder.exists() else []:
            text = path.read_text(errors="replace")
            found += [f"{path}: contains a secret" for s in secrets if s in text][:1]
    return found
