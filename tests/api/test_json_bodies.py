"""Bodies are JSON: another media type is a 415 that says what to send, and an
integer too long to read is a 422 that names the field's limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from factq.settings import Settings
from tests.conftest import api_client
from tests.support.backends import queue_depth

JOB = b'{"task": "factorial", "input": {"n": 5}}'
TOKEN = "worker-token-for-json-tests"
ROUTES = [
    ("/v1/jobs", JOB),
    ("/v1/jobs/batch", b'{"jobs": [' + JOB + b"]}"),
    ("/factorial/update", b'{"id": "0123456789abcdef0123456789abcdef", "status": "processing"}'),
]
NOT_JSON = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]


@pytest.fixture
async def client(settings_factory: Callable[..., Settings]) -> Any:
    settings = settings_factory(worker_token=TOKEN)
    async with api_client(settings) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client, settings


@pytest.mark.parametrize("content_type", [*NOT_JSON, None])
@pytest.mark.parametrize(("path", "body"), ROUTES, ids=[path for path, _ in ROUTES])
async def test_a_body_not_sent_as_json_is_a_415_that_says_what_to_send(
    client: tuple[httpx.AsyncClient, Settings], path: str, body: bytes, content_type: str | None
) -> None:
    http, settings = client
    headers = {"Content-Type": content_type} if content_type else {}
    response = await http.post(path, content=body, headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["type"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]
    assert (repr(content_type) if content_type else "no type was named") in error["message"]
    assert await queue_depth(settings) == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
async def test_json_media_types_are_read(
    client: tuple[httpx.AsyncClient, Settings], content_type: str
) -> None:
    http, _ = client
    response = await http.post("/v1/jobs", content=JOB, headers={"Content-Type": content_type})
    assert response.status_code == 202


async def test_no_body_at_all_is_a_422_missing_body(
    client: tuple[httpx.AsyncClient, Settings],
) -> None:
    http, _ = client
    response = await http.post("/v1/jobs")
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_input"


@pytest.mark.parametrize(("sign", "limit"), [("", "at most 1000000"), ("-", "at least 0")])
async def test_an_integer_too_long_to_read_is_a_422_naming_the_limit(
    client: tuple[httpx.AsyncClient, Settings], sign: str, limit: str
) -> None:
    http, settings = client
    n = sign + "9" * 5000
    body = f'{{"task": "factorial", "input": {{"n": {n}}}}}'.encode()
    response = await http.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert f"n: {'a negative' if sign else 'an'} integer of 5,000 digits" in error["message"]
    assert limit in error["message"]
    assert error["details"] == [{"loc": "input.n", "message": error["message"].split("n: ", 1)[1]}]
    assert await queue_depth(settings) == 0


async def test_a_batch_names_the_item_whose_integer_is_too_long(
    client: tuple[httpx.AsyncClient, Settings],
) -> None:
    http, _ = client
    items = [b'{"task": "factorial", "input": {"n": 5}}'] * 2
    items.insert(1, b'{"task": "factorial", "input": {"n": ' + b"1" * 100_000 + b"}}")
    body = b'{"jobs": [' + b",".join(items) + b"]}"
    response = await http.post(
        "/v1/jobs/batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["index"], d["loc"]) for d in details] == [(1, "input.n")]
    assert "100,000 digits" in details[0]["message"] and "at most 1000000" in details[0]["message"]
