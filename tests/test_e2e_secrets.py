"""No secret in the logs: keys, the worker token and URL credentials, across a session."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from factq.settings import Settings
from tests.conftest import make_settings
from tests.support import secrets_watch
from tests.support.backends import delete_namespace
from tests.support.service import running_service
from tests.support.webhook_receiver import Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "k3y-that-must-never-be-logged"
TOKEN = "w0rker-t0ken-never-logged"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-secret-never-logged").decode()
# Credentials a webhook URL carries: its receiver's, never to be shown or logged.
HOOK_PASSWORD = "h00k-passw0rd-never-logged"
HOOK_TOKEN = "h00k-query-t0ken-never-logged"


@pytest.fixture
def receiver() -> Iterator[int]:
    """A webhook receiver on a free loopback port, in a thread."""
    with receiving() as port:
        yield port


@pytest.fixture
def secret_settings() -> Iterator[Settings]:
    settings = make_settings(
        api_keys=KEY,
        worker_token=TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts="127.0.0.1",
    )
    secrets_watch.remember_values(HOOK_PASSWORD, HOOK_TOKEN)
    yield settings
    asyncio.run(delete_namespace(settings))


async def use_everything(base_url: str, receiver: int) -> dict[str, Any]:
    """Every route and socket that takes a secret; the job with a webhook, delivered."""
    auth = {"Authorization": f"Bearer {KEY}"}
    hook = f"http://hooks:{HOOK_PASSWORD}@127.0.0.1:{receiver}/hook?token={HOOK_TOKEN}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        job = (
            await http.post(
                "/v1/jobs",
                json={"task": "factorial", "input": {"n": 10}, "webhook": {"url": hook}},
                headers=auth,
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
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=auth) as http:
        deadline = time.monotonic() + 30
        path = f"/v1/jobs/{job['id']}"
        while not (job := (await http.get(path)).json())["webhook"]["deliveries"]:
            assert time.monotonic() < deadline, "the webhook was never delivered"
            await asyncio.sleep(0.05)
        events = (await http.get(f"/v1/jobs/{job['id']}/events?after=0")).text
    return {"job": job, "events": events}


def test_no_secret_appears_in_any_log(
    secret_settings: Settings, receiver: int, tmp_path: Path
) -> None:
    with running_service(secret_settings, tmp_path) as service:
        seen = asyncio.run(use_everything(service.base_url, receiver))
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert "WebSocket" in logs, "the access lines must be there to be checked"
    assert "HTTP Request: POST http://***@127.0.0.1" in logs, "the delivery line must be there"
    for secret in (KEY, TOKEN, "guest:guest", HOOK_PASSWORD, HOOK_TOKEN):
        assert secret not in logs
    # The receiver got the URL whole; the job and its events show it redacted.
    assert Receiver.received[0][0] == f"/hook?token={HOOK_TOKEN}"
    assert Receiver.received[0][1].startswith("Basic ")
    assert seen["job"]["webhook"]["url"] == f"http://***@127.0.0.1:{receiver}/hook?***"
    assert seen["job"]["webhook"]["deliveries"][0]["status_code"] == 204
    for secret in (HOOK_PASSWORD, HOOK_TOKEN):
        assert secret not in json.dumps(seen["job"]) and secret not in seen["events"]
