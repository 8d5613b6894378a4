"""X-Request-ID: the caller's when it is a safe one, else a new one, on every
response; the job messages a request queues carry it."""

from __future__ import annotations

import json

import aio_pika
import httpx
import pytest

from factq.api.request_ids import request_id_of
from factq.broker import QueueNames
from factq.settings import Settings


def scope_with(*values: bytes) -> dict[str, object]:
    return {"headers": [(b"x-request-id", value) for value in values]}


@pytest.mark.parametrize(
    "given",
    [b"abc", b"0f3c2a1e-9d2b-4c7e-8f00-123456789abc", b"Root_1.a:b-c", b"x" * 128],
)
def test_a_safe_id_is_kept(given: bytes) -> None:
    assert request_id_of(scope_with(given)) == given.decode()


@pytest.mark.parametrize(
    "given",
    [b"", b"x" * 129, b"two words", b"a\tb", b"<script>", b"caf\xc3\xa9", b"a;b", b"token=k"],
)
def test_any_other_is_replaced_by_a_new_one(given: bytes) -> None:
    made = request_id_of(scope_with(given))
    assert made != given.decode(errors="replace")
    assert len(made) == 32 and int(made, 16) >= 0


def test_each_request_without_one_gets_its_own() -> None:
    assert request_id_of(scope_with()) != request_id_of(scope_with())


def test_the_first_safe_one_of_several_is_kept() -> None:
    assert request_id_of(scope_with(b"bad one", b"good-one", b"other")) == "good-one"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/v1/jobs/" + "0" * 32, 404),
        ("GET", "/v1/jobs?limit=0", 400),
        ("POST", "/v1/jobs", 422),
        ("DELETE", "/healthz", 405),
    ],
)
async def test_every_response_carries_it(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    given = await client.request(method, path, headers={"X-Request-ID": "mine-1"}, json={})
    assert given.status_code == status
    assert given.headers.get_list("x-request-id") == ["mine-1"]
    made = await client.request(method, path, json={})
    assert len(made.headers["x-request-id"]) == 32


async def test_the_job_message_carries_the_request_s_id(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"task": "factorial", "input": {"n": 7}}
    answer = await client.post("/v1/jobs", json=body, headers={"X-Request-ID": "submit-1"})
    assert answer.status_code == 202 and answer.headers["x-request-id"] == "submit-1"
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue_name = QueueNames(settings.namespace).task_queue("factorial")
        queue = await channel.declare_queue(queue_name, passive=True)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
    assert json.loads(message.body)["job_id"] == answer.json()["id"]
    assert json.loads(message.body)["request_id"] == "submit-1"
