"""Log lines are masked before they are written: keys in query strings, and the
user, password, query and fragment of any absolute URL."""

from __future__ import annotations

import pytest

from factq.logs import redact


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            'HTTP Request: POST https://u:p4ss@hooks.example/x?token=s3cret#f "HTTP/1.1 200 OK"',
            'HTTP Request: POST https://***@hooks.example/x?***#*** "HTTP/1.1 200 OK"',
        ),
        ("https://u:p@ss@host/x", "https://***@host/x"),
        ("amqp://guest:guest@rabbit:5672/", "amqp://***@rabbit:5672/"),
        (
            '"GET /v1/jobs/x/events?token=k3y&after=2 HTTP/1.1" 101',
            '"GET /v1/jobs/x/events?token=[redacted]&after=2 HTTP/1.1" 101',
        ),
        ('"GET /v1/jobs?limit=5 HTTP/1.1" 200', '"GET /v1/jobs?limit=5 HTTP/1.1" 200'),
        ("https://example.com/hook", "https://example.com/hook"),
    ],
)
def test_secrets_in_lines_are_masked(line: str, shown: str) -> None:
    assert redact(line) == shown
