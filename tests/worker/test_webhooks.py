"""Webhooks to a real receiver on loopback: signed, once, retried, never redirected."""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as redis
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from factq.settings import Settings
from factq.state.keys import Keys
from factq.state.webhook_queue import GROUP
from factq.webhooks.destinations import Address
from tests.conftest import api_client, running_worker
from tests.support.service import free_port
from tests.support.waiting import until, until_true, wait_for_job
from tests.support.webhook_receiver import serving

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Receiver:
    """Records every request; answers `failures` times with `fail_status`, then 200."""

    url: str = ""
    failures: int = 0
    fail_status: int = 500
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        if len(self.requests) <= self.failures:
            headers = (
                {"location": f"{self.url}/elsewhere"} if self.fail_status in (302, 307) else {}
            )
            return Response(status_code=self.fail_status, headers=headers)
        return Response(status_code=200)

    def verified(self) -> list[dict[str, Any]]:
        """Each request's body, after checking its signature."""
        return [Webhook(SECRET).verify(body, headers) for headers, body in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = Starlette(
        routes=[
            Route("/hook", state.hook, methods=["POST"]),
            Route("/elsewhere", state.hook, methods=["POST"]),
        ]
    )
    port = free_port()
    state.url = f"http://127.0.0.1:{port}"
    async with serving(app, port):
        yield state


@pytest.fixture
def hook_settings(settings_factory) -> Settings:
    settings: Settings = settings_factory(
        webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1", webhook_retry_base_s=0.05
    )
    return settings


async def submit(client: httpx.AsyncClient, url: str, **webhook: Any) -> httpx.Response:
    body = {"task": "factorial", "input": {"n": 20}, "webhook": {"url": url, **webhook}}
    return await client.post("/v1/jobs", json=body)


async def logged(client: httpx.AsyncClient, job_id: str, *, attempts: int) -> dict[str, Any]:
    """The job, once its webhook log holds `attempts` attempts."""
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        return len(job["webhook"]["deliveries"]) >= attempts

    await until_true(done)
    return job


async def webhooks_backlog(settings: Settings) -> tuple[int, int]:
    """Deliveries in the namespace's webhooks stream, and those read but unfinished."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        streams = Keys(settings.namespace).webhook_streams
        length = pending = 0
        for stream in streams:
            length += await client.xlen(stream)
            pending += (await client.xpending(stream, GROUP))["pending"]
        return length, pending
    finally:
        await client.aclose()


async def test_the_completion_event_arrives_once_signed(
    hook_settings: Settings, receiver: Receiver
) -> None:
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        response = await submit(client, f"{receiver.url}/hook")
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await wait_for_job(client, job_id)
        job = await logged(client, job_id, attempts=1)
    # The worker has stopped, its deliveries in hand finished: a duplicate
    # would have reached the receiver by now, or still wait in the stream.
    assert await webhooks_backlog(hook_settings) == (0, 0)
    [delivery] = receiver.verified()
    assert delivery["type"] == "job.completed"
    assert delivery["data"]["id"] == job_id
    assert delivery["data"]["status"] == "succeeded"
    assert delivery["data"]["result"]["digits"] == 19
    headers = receiver.requests[0][0]
    assert headers["webhook-id"].startswith(job_id)
    assert job["webhook"]["url"] == f"{receiver.url}/hook"
    assert [(d["attempt"], d["status_code"]) for d in job["webhook"]["deliveries"]] == [(1, 200)]


async def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(
    hook_settings: Settings, receiver: Receiver
) -> None:
    receiver.failures = 2
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        job_id = (await submit(client, f"{receiver.url}/hook")).json()["id"]
        await wait_for_job(client, job_id)
        job = await logged(client, job_id, attempts=3)
    assert len(receiver.requests) == 3
    bodies = receiver.verified()
    assert {body["type"] for body in bodies} == {"job.completed"}
    # The same delivery each time: one id, for the receiver to deduplicate.
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
    log = job["webhook"]["deliveries"]
    assert [(d["attempt"], d["status_code"]) for d in log] == [(1, 500), (2, 500), (3, 200)]


async def test_started_and_completed_events(hook_settings: Settings, receiver: Receiver) -> None:
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        url = f"{receiver.url}/hook"
        job_id = (await submit(client, url, events=["started", "completed"])).json()["id"]
        await wait_for_job(client, job_id)
        await until(lambda: len(receiver.requests) >= 2)
    types = sorted(body["type"] for body in receiver.verified())
    assert types == ["job.completed", "job.started"]


async def test_redirects_are_not_followed(hook_settings: Settings, receiver: Receiver) -> None:
    receiver.failures, receiver.fail_status = 100, 307
    settings = hook_settings.model_copy(update={"webhook_max_attempts": 2})
    async with api_client(settings) as client, running_worker(settings):
        job_id = (await submit(client, f"{receiver.url}/hook")).json()["id"]
        await wait_for_job(client, job_id)
        job = await logged(client, job_id, attempts=2)
    assert len(receiver.requests) == 2, "the redirect target must never be called"
    assert [d["status_code"] for d in job["webhook"]["deliveries"]] == [307, 307]


async def test_a_delivery_connects_to_the_address_its_check_resolved(
    settings_factory, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the destination check's resolver knows receiver.test: a delivery
    # that resolved the name again to connect would not reach the receiver.
    async def resolve(host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr("factq.webhooks.destinations._resolve", resolve)
    settings = settings_factory(
        webhook_secret=SECRET, webhook_allowed_hosts="receiver.test", webhook_max_attempts=1
    )
    port = urlsplit(receiver.url).port
    async with api_client(settings) as client, running_worker(settings):
        job_id = (await submit(client, f"http://receiver.test:{port}/hook")).json()["id"]
        await wait_for_job(client, job_id)
        job = await logged(client, job_id, attempts=1)
    assert [d["status_code"] for d in job["webhook"]["deliveries"]] == [200]
    [delivery] = receiver.verified()
    assert delivery["data"]["id"] == job_id
    assert receiver.requests[0][0]["host"] == f"receiver.test:{port}"


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        # Public, but not one host's unicast address: multicast, broadcast,
        # reserved, documentation, shared (carrier-grade NAT), IPv4 in IPv6.
        "https://224.0.0.1/hook",
        "https://239.255.255.250/hook",
        "https://[ff0e::1]/hook",
        "https://255.255.255.255/hook",
        "https://240.0.0.1/hook",
        "https://192.0.2.1/hook",
        "https://198.51.100.7/hook",
        "https://203.0.113.9/hook",
        "https://[2001:db8::1]/hook",
        "https://100.64.0.1/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:224.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://[2002:7f00:1::1]/hook",
        "https://[fec0::1]/hook",
        "https://192.88.99.1/hook",
        "http://example.com/hook",
        "https://example.com:99999/hook",
        "ftp://example.com/hook",
        "not a url",
    ],
)
async def test_forbidden_destinations_are_refused_at_submit(
    hook_settings: Settings, url: str
) -> None:
    async with api_client(hook_settings) as client:
        response = await submit(client, url)
        listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_webhook"
    assert listed == []


async def test_webhooks_need_a_secret(settings_factory) -> None:
    settings = settings_factory(webhook_allowed_hosts="127.0.0.1")
    async with api_client(settings) as client:
        response = await submit(client, "http://127.0.0.1:9/hook")
    assert response.status_code == 422
    assert "FACTQ_WEBHOOK_SECRET" in response.json()["error"]["message"]


async def test_a_batch_names_the_items_with_a_forbidden_webhook(hook_settings: Settings) -> None:
    items = [{"task": "factorial", "input": {"n": 1}} for _ in range(3)]
    items[1]["webhook"] = {"url": "https://10.0.0.1/hook"}
    items[2]["webhook"] = {"url": "https://127.0.0.1/hook", "events": ["sometimes"]}
    async with api_client(hook_settings) as client:
        response = await client.post("/v1/jobs/batch", json={"jobs": items})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert [d["index"] for d in error["details"]] == [2]
    items[2].pop("webhook")
    async with api_client(hook_settings) as client:
        response = await client.post("/v1/jobs/batch", json={"jobs": items})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_webhook"
    assert [d["index"] for d in response.json()["error"]["details"]] == [1]
    assert json.dumps(response.json()).count("10.0.0.1") >= 1
