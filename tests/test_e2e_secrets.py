"""No secret in the logs: keys, the worker token and URL credentials, across a session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import running_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "k3y-that-must-never-be-logged"
TOKEN = "w0rker-t0ken-never-logged"


@pytest.fixture
def secret_settings() -> Iterator[Settings]:
    settings = make_settings(api_keys=KEY, worker_token=TOKEN)
    yield settings
    asyncio.run(delete_namespace(settings))


async def use_everything(base_url: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        job = (
            await http.post(
                "/v1/jobs", json={"task": "factorial", "input": {"n": 10}}, headers=auth
            )
        ).json()
        await http.get("/v1/jobs", headers={"Authorization": "Bearer wrong-" + KEY})
        await http.post(
            "/factorial/update",
            json={"id": job["id"], "status": "processing"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    ws = base_url.replace("http://", "ws://")
    async with websockets.connect(f"{ws}/v1/jobs/{job['id']}/events?token={KEY}") as socket:
        await socket.recv()
    async with websockets.connect(f"{ws}/v1/events") as socket:
        await socket.send(json.dumps({"token": KEY}))
        await socket.send(json.dumps({"subscribe": [job["id"]]}))
        await socket.recv()


def test_no_secret_appears_in_any_log(secret_settings: Settings, tmp_path: Path) -> None:
    with running_service(secret_settings, tmp_path) as service:
        asyncio.run(use_everything(service.base_url))
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert "WebSocket" in logs, "the access lines must be there to be checked"
    assert KEY not in logs
    assert TOKEN not in logs
    assert "guest:guest" not in logs
