"""FACTQ_MAX_STREAMS_PER_CALLER: WebSockets and SSE streams open at once, per key
(per client address with keys off), counted together."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import live_server

JOB = {"task": "factorial", "input": {"n": 5}}
CAP = 3


async def submit(address: str, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"http://{address}/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@contextlib.asynccontextmanager
async def job_socket(address: str, job_id: str, key: str | None = None) -> AsyncIterator[Any]:
    """A job's event socket, its first message read (so it is being served)."""
    query = f"?token={key}" if key else ""
    async with websockets.connect(f"ws://{address}/v1/jobs/{job_id}/events{query}") as socket:
        yield socket, json.loads(await socket.recv())


@contextlib.asynccontextmanager
async def sse_stream(
    http: httpx.AsyncClient, address: str, job_id: str, key: str | None = None
) -> AsyncIterator[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"http://{address}/v1/jobs/{job_id}/events"
    async with http.stream("GET", url, headers=headers) as response:
        yield response


async def test_streams_past_the_cap_are_refused_until_one_closes(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_streams_per_caller=CAP)
    # No worker: each job stays queued, so its streams stay open.
    async with live_server(settings) as address, httpx.AsyncClient(timeout=10) as http:
        job_id = await submit(address)
        async with (
            asyncio.timeout(30),
            job_socket(address, job_id) as (first, _),
            job_socket(address, job_id),
            sse_stream(http, address, job_id) as open_stream,
        ):
            assert open_stream.status_code == 200
            # A WebSocket past the cap: told why, then closed with 1013.
            async with websockets.connect(f"ws://{address}/v1/jobs/{job_id}/events") as over:
                message = json.loads(await over.recv())
                with pytest.raises(websockets.ConnectionClosed):
                    await over.recv()
            assert message["type"] == "error"
            assert message["error"]["type"] == "rate_limited"
            assert "at most 3" in message["error"]["message"]
            assert over.close_code == 1013
            # The multiplexed socket counts too.
            async with websockets.connect(f"ws://{address}/v1/events") as many:
                assert json.loads(await many.recv())["error"]["type"] == "rate_limited"
            # An SSE stream past the cap: a 429 before it starts.
            async with sse_stream(http, address, job_id) as refused:
                await refused.aread()
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            await first.close()
            # Its slot is free once the server has seen it close.
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                async with job_socket(address, job_id) as (_, state):
                    if state["type"] == "job":
                        break
                assert asyncio.get_running_loop().time() < deadline, "the slot never came back"


async def test_each_key_has_its_own_streams(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(max_streams_per_caller=1, api_keys="k1,k2")
    async with live_server(settings) as address, asyncio.timeout(30):
        one, two = await submit(address, "k1"), await submit(address, "k2")
        async with (
            job_socket(address, one, "k1") as (_, mine),
            job_socket(address, two, "k2") as (_, theirs),
        ):
            assert mine["type"] == theirs["type"] == "job"
            async with job_socket(address, one, "k1") as (_, over):
                assert over["error"]["type"] == "rate_limited"
