"""Log lines are masked before they are written: keys in query strings, and the
user, password, query and fragment of any absolute URL. JSON lines are one
object a line, with the job and the request they are about."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from factq.logs import JsonLines, current_request_id, log_context, redact


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


def json_lines(level: int = logging.DEBUG) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own, writing through the JSON formatter alone into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines())
    logger = logging.Logger("factq.test", level)
    logger.addHandler(handler)
    return logger, out


def only_line(out: io.StringIO) -> dict[str, Any]:
    [line] = out.getvalue().splitlines()
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_json_line_has_the_time_level_logger_and_message() -> None:
    logger, out = json_lines()
    before = datetime.now(UTC)
    logger.info("job %s queued", "abc")
    line = only_line(out)
    assert list(line) == ["time", "level", "logger", "message"]
    assert line["level"] == "INFO" and line["logger"] == "factq.test"
    assert line["message"] == "job abc queued"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    at = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)


def test_a_traceback_is_a_field_of_the_one_line() -> None:
    logger, out = json_lines()
    try:
        raise ValueError('bad "input"\nsecond line')
    except ValueError:
        logger.exception("job failed")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    line = only_line(out)
    assert line["message"] == "job failed" and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):\n")
    assert line["exception"].endswith('ValueError: bad "input"\nsecond line')


def test_a_stack_is_a_field_of_the_one_line() -> None:
    logger, out = json_lines()
    logger.warning("look", stack_info=True)
    assert only_line(out)["stack"].startswith("Stack (most recent call last):\n")


def test_extra_fields_and_the_context_s_job_and_request() -> None:
    logger, out = json_lines()
    with log_context(job_id="j1", request_id="r1"):
        logger.info("in context")
        logger.info("overridden", extra={"job_id": "j2", "attempt": 2, "tags": ("a", 1)})
        logger.info("unset", extra={"request_id": None})
    logger.info("outside", extra={"path": Path("/tmp/x"), "sizes": {"n": 5}})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["job_id"] == "j1" and lines[0]["request_id"] == "r1"
    assert lines[1]["job_id"] == "j2" and lines[1]["request_id"] == "r1"
    assert lines[1]["attempt"] == 2 and lines[1]["tags"] == ["a", 1]
    assert lines[2]["request_id"] == "r1", "a None extra adds nothing"
    assert "job_id" not in lines[3] and "request_id" not in lines[3]
    assert lines[3]["path"] == "/tmp/x" and lines[3]["sizes"] == {"n": 5}


def test_an_extra_field_does_not_replace_a_core_one() -> None:
    logger, out = json_lines()
    logger.info("real", extra={"level": "fake", "time": "then", "logger": "other"})
    line = only_line(out)
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "factq.test", "real")
    assert line["time"] != "then"


def test_context_ends_with_its_block() -> None:
    with log_context(request_id="outer"):
        with log_context(job_id="j"):
            assert current_request_id() == "outer"
        with log_context(request_id="inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
    assert current_request_id() is None


SECRET = "p4ssw0rd-in-a-url"


def test_every_field_of_a_json_line_is_masked() -> None:
    logger, out = json_lines()
    url = f"amqp://guest:{SECRET}@rabbit:5672/"
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        logger.error(
            "connecting to %s",
            url,
            exc_info=True,
            extra={
                "target": url,
                "hooks": [f"https://u:{SECRET}@hooks.example/x"],
                "query": {f"https://h/?token={SECRET}": f"/v1/events?token={SECRET}"},
                "client_url": httpx.URL(f"https://u:{SECRET}@h/x"),
            },
        )
    text = out.getvalue()
    assert SECRET not in text
    line = only_line(out)
    assert line["message"] == "connecting to amqp://***@rabbit:5672/"
    assert line["target"] == "amqp://***@rabbit:5672/"
    assert line["hooks"] == ["https://***@hooks.example/x"]
    assert line["query"] == {"https://h/?***": "/v1/events?token=[redacted]"}
    assert line["client_url"] == "https://***@h/x"
    assert "cannot reach amqp://***@rabbit:5672/" in line["exception"]


def test_a_message_whose_arguments_do_not_fit_is_still_one_line() -> None:
    logger, out = json_lines()
    logger.info("%d jobs", "many")
    line = only_line(out)
    assert line["message"] == "%d jobs"
    assert line["format_error"].startswith("TypeError: ")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_an_uncaught_exception_is_one_json_line() -> None:
    done = run_python(
        "from factq.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "raise RuntimeError('cannot reach amqp://guest:s3cret-pw@rabbit/')\n"
    )
    assert done.returncode == 1
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["level"] == "CRITICAL" and line["message"] == "uncaught exception"
    assert line["exception"].endswith("RuntimeError: cannot reach amqp://***@rabbit/")
    assert "s3cret-pw" not in done.stderr


def test_invalid_settings_are_a_json_line_when_json_is_asked() -> None:
    done = run_python(
        "import sys; from factq.cli import main; sys.exit(main(['worker']))",
        FACTQ_LOG_FORMAT="json",
        FACTQ_MAX_N="-1",
    )
    assert done.returncode == 2
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["level"] == "ERROR" and line["message"].startswith("invalid settings: ")
    assert "max_n" in line["message"]
