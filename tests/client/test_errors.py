"""Error bodies become typed exceptions; a failed download leaves no partial file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factq.client import (
    Conflict,
    FactqClientError,
    IdempotencyConflict,
    NotFound,
    QueueFull,
    RateLimited,
    Unavailable,
)
from factq.client._common import Endpoint, write_chunks
from factq.client.errors import error_from_response


def error(status_code: int, error_type: str, **headers: str) -> httpx.Response:
    body = {"error": {"type": error_type, "message": f"a {error_type}"}}
    return httpx.Response(status_code, json=body, headers=headers)


def test_each_contract_type_has_its_class() -> None:
    conflict = error_from_response(error(409, "idempotency_conflict"))
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(conflict, Conflict)
    assert (conflict.status_code, conflict.type, conflict.message) == (
        409,
        "idempotency_conflict",
        "a idempotency_conflict",
    )
    full = error_from_response(error(503, "queue_full", **{"Retry-After": "5"}))
    assert isinstance(full, QueueFull)
    assert isinstance(full, Unavailable)
    assert full.retry_after_s == 5.0
    limited = error_from_response(error(429, "rate_limited", **{"Retry-After": "2"}))
    assert isinstance(limited, RateLimited)
    assert limited.retry_after_s == 2.0


def test_an_unknown_type_falls_back_to_the_base_class() -> None:
    unknown = error_from_response(error(418, "teapot"))
    assert type(unknown) is FactqClientError
    assert (unknown.status_code, unknown.type) == (418, "teapot")


def test_a_body_without_the_error_shape_is_typed_by_its_status() -> None:
    gateway = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert isinstance(gateway, Unavailable)
    assert gateway.type == "unavailable"
    missing = error_from_response(httpx.Response(404, text="no"))
    assert isinstance(missing, NotFound)
    odd = error_from_response(httpx.Response(500, json={"detail": "x"}))
    assert (type(odd), odd.type) == (FactqClientError, "http_error")


def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTQ_URL", "https://factq.example/base/")
    monkeypatch.setenv("FACTQ_API_KEY", "secret")
    endpoint = Endpoint.resolve(None, None)
    assert endpoint.base_url == "https://factq.example/base"
    assert endpoint.headers()["Authorization"] == "Bearer secret"
    assert endpoint.events_url("ab", 3) == "wss://factq.example/base/v1/jobs/ab/events?after=3"
    assert Endpoint.resolve("http://127.0.0.1:9", "").api_key is None
    with pytest.raises(ValueError):
        Endpoint.resolve("127.0.0.1:8000", None)


def test_a_failed_download_leaves_no_file(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"123"
        raise httpx.ReadError("connection reset")

    with pytest.raises(httpx.ReadError):
        write_chunks(chunks(), tmp_path / "value.txt")
    assert list(tmp_path.iterdir()) == []
    assert write_chunks(iter([b"12", b"34"]), tmp_path / "value.txt") == 4
    assert (tmp_path / "value.txt").read_bytes() == b"1234"
