"""API keys, ownership, origins and size limits, on real connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import api_client, live_server

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings_factory) -> Settings:
    settings: Settings = settings_factory(
        api_keys=f"{ALICE}, {BOB}", allowed_origins="https://app.example.com"
    )
    return settings


@pytest.fixture
async def client(keyed: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(keyed) as client:
        yield client


@pytest.fixture
async def server(keyed: Settings) -> AsyncIterator[str]:
    async with live_server(keyed) as address:
        yield address


async def alices_job(client: httpx.AsyncClient) -> str:
    body = {"task": "factorial", "input": {"n": 5}}
    response = await client.post("/v1/jobs", json=body, headers=as_(ALICE))
    assert response.status_code == 202
    return str(response.json()["id"])


ROUTES = [
    ("POST", "/v1/jobs", {"task": "factorial", "input": {"n": 5}}),
    ("POST", "/v1/jobs/batch", {"jobs": [{"task": "factorial", "input": {"n": 5}}]}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/tasks", None),
    ("GET", "/factorial?no=5", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("headers", [{}, as_("wrong"), {"Authorization": ALICE}])
async def test_no_valid_key_is_a_401(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


JOB_ROUTES = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/result"),
    ("GET", "/v1/jobs/{id}/events"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/factorial/result?id={id}"),
]


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
async def test_another_keys_job_is_a_404_like_an_unknown_id(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    job_id = await alices_job(client)
    unknown = "0" * 32
    theirs = await client.request(method, path.format(id=job_id), headers=as_(BOB))
    missing = await client.request(method, path.format(id=unknown), headers=as_(BOB))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["type"] == "not_found"
    assert (
        theirs.json()["error"]["message"].replace(job_id, unknown)
        == missing.json()["error"]["message"]
    )
    # Its owner still sees it.
    mine = await client.get(f"/v1/jobs/{job_id}", headers=as_(ALICE))
    assert mine.status_code == 200


async def test_each_key_lists_only_its_own_jobs(client: httpx.AsyncClient) -> None:
    job_id = await alices_job(client)
    alice = (await client.get("/v1/jobs", headers=as_(ALICE))).json()["jobs"]
    bob = (await client.get("/v1/jobs", headers=as_(BOB))).json()["jobs"]
    assert [job["id"] for job in alice] == [job_id]
    assert bob == []


async def test_health_and_docs_need_no_key(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_body_over_the_limit_is_a_413(client: httpx.AsyncClient, keyed: Settings) -> None:
    big = {"task": "factorial", "input": {"n": 5, "pad": "x" * keyed.max_body_bytes}}
    response = await client.post("/v1/jobs", json=big, headers=as_(ALICE))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


async def socket_outcome(url: str, **kwargs: Any) -> tuple[dict[str, Any] | None, int | None]:
    """The first message (None if it closed first) and the close code; or (None, the
    HTTP status) when the handshake was refused. The jobs here never run: no worker."""
    try:
        async with asyncio.timeout(15), websockets.connect(url, **kwargs) as socket:
            try:
                return json.loads(await socket.recv()), None
            except websockets.ConnectionClosedError:
                return None, socket.close_code
    except websockets.InvalidStatus as refused:
        return None, refused.response.status_code


async def test_sockets_need_a_key(server: str, client: httpx.AsyncClient) -> None:
    job_id = await alices_job(client)
    url = f"ws://{server}/v1/jobs/{job_id}/events"
    assert await socket_outcome(url + "?token=wrong") == (None, 401)
    assert await socket_outcome(url, additional_headers=as_("wrong")) == (None, 401)
    for kwargs in ({}, {"additional_headers": as_(ALICE)}):
        first, _ = await socket_outcome(url + ("" if kwargs else f"?token={ALICE}"), **kwargs)
        assert first is not None and first["job"]["id"] == job_id


async def test_a_key_in_the_first_message(server: str, client: httpx.AsyncClient) -> None:
    job_id = await alices_job(client)
    url = f"ws://{server}/v1/jobs/{job_id}/events"
    async with asyncio.timeout(15), websockets.connect(url) as socket:
        await socket.send(json.dumps({"token": ALICE}))
        first = json.loads(await socket.recv())
    assert first["job"]["id"] == job_id
    async with asyncio.timeout(15), websockets.connect(url) as socket:
        await socket.send(json.dumps({"token": "wrong"}))
        with pytest.raises(websockets.ConnectionClosedError):
            await socket.recv()
    assert socket.close_code == 1008


async def test_another_keys_job_on_a_socket_is_not_found(
    server: str, client: httpx.AsyncClient
) -> None:
    job_id = await alices_job(client)
    assert await socket_outcome(f"ws://{server}/v1/jobs/{job_id}/events?token={BOB}") == (
        None,
        4404,
    )
    async with (
        asyncio.timeout(15),
        websockets.connect(f"ws://{server}/v1/events?token={BOB}") as socket,
    ):
        await socket.send(json.dumps({"subscribe": [job_id]}))
        error = json.loads(await socket.recv())
    assert error["type"] == "error" and error["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example.net", False),
        ("https://app.example.com", True),
        (None, True),
    ],
)
async def test_socket_origins(server: str, origin: str | None, allowed: bool) -> None:
    headers = {"Origin": origin} if origin else {}
    url = f"ws://{server}/v1/events?token={ALICE}"
    try:
        async with (
            asyncio.timeout(10),
            websockets.connect(url, additional_headers=headers, origin=None),
        ):
            opened = True
    except websockets.InvalidStatus as refused:
        opened = False
        assert refused.response.status_code == 403
    assert opened is allowed


async def test_the_pages_own_origin_is_allowed(server: str) -> None:
    url = f"ws://{server}/v1/events?token={ALICE}"
    async with (
        asyncio.timeout(10),
        websockets.connect(url, additional_headers={"Origin": f"http://{server}"}),
    ):
        pass


async def test_cors_for_listed_origins_only(client: httpx.AsyncClient) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    allowed = await client.options("/v1/jobs", headers=preflight)
    assert allowed.headers.get("access-control-allow-origin") == "https://app.example.com"
    other = await client.options(
        "/v1/jobs", headers={**preflight, "Origin": "https://evil.example.net"}
    )
    assert "access-control-allow-origin" not in other.headers


async def test_a_streamed_body_over_the_limit_is_a_413(
    client: httpx.AsyncClient, keyed: Settings
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"task": "factorial", "input": {"n": 5, "pad": "'
        for _ in range(keyed.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    response = await client.post(
        "/v1/jobs", content=chunks(), headers={**as_(ALICE), "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
