"""The /v1 routes against the real Redis and RabbitMQ, with no worker running."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from factq.settings import Settings
from factq.tasks import TaskRegistry
from tests.conftest import api_client
from tests.support.backends import queue_depth
from tests.support.redis_server import RedisServer


async def submit(client: httpx.AsyncClient, n: Any = 5) -> httpx.Response:
    return await client.post("/v1/jobs", json={"task": "factorial", "input": {"n": n}})


async def test_submit_answers_202_with_the_queued_job(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await submit(client, 150_000)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert len(job["id"]) == 32 and int(job["id"], 16) >= 0
    assert job["status"] == "queued"
    assert job["task"] == "factorial" and job["input"] == {"n": 150_000}
    assert job["attempts"] == 0 and job["progress"] is None
    assert job["cancel_requested"] is False
    assert job["metrics"] == {"queue_s": None, "run_s": None}
    assert job["created_at"].endswith("Z")
    assert await queue_depth(settings) == 1
    got = await client.get(job["id"].join(["/v1/jobs/", ""]))
    assert got.status_code == 200 and got.json() == job


async def test_job_ids_are_distinct(client: httpx.AsyncClient) -> None:
    ids = {(await submit(client)).json()["id"] for _ in range(20)}
    assert len(ids) == 20


JOB_BODY: dict[str, Any] = {"task": "factorial", "input": {"n": 5}}
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("negative", {"task": "factorial", "input": {"n": -1}}, "invalid_input"),
    ("float", {"task": "factorial", "input": {"n": 1.5}}, "invalid_input"),
    ("whole float", {"task": "factorial", "input": {"n": 1.0}}, "invalid_input"),
    ("word", {"task": "factorial", "input": {"n": "abc"}}, "invalid_input"),
    ("numeric string", {"task": "factorial", "input": {"n": "150000"}}, "invalid_input"),
    ("boolean", {"task": "factorial", "input": {"n": True}}, "invalid_input"),
    ("too large", {"task": "factorial", "input": {"n": 10**9}}, "invalid_input"),
    ("missing n", {"task": "factorial", "input": {}}, "invalid_input"),
    ("missing input", {"task": "factorial"}, "invalid_input"),
    ("input not an object", {"task": "factorial", "input": 5}, "invalid_input"),
    ("unknown field", {"task": "factorial", "input": {"n": 5}, "x": 1}, "invalid_input"),
    ("unknown task", {"task": "fibonacci", "input": {"n": 5}}, "unknown_task"),
    ("body not an object", [1, 2], "invalid_input"),
    (
        "deadline a boolean",
        {"task": "factorial", "input": {"n": 5}, "deadline_s": True},
        "invalid_input",
    ),
    (
        "deadline a string",
        {"task": "factorial", "input": {"n": 5}, "deadline_s": "9"},
        "invalid_input",
    ),
]


@pytest.mark.parametrize(
    ("body", "error_type"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_input_is_a_422_and_queues_nothing(
    private_redis: RedisServer,
    settings_factory: Callable[..., Settings],
    body: Any,
    error_type: str,
) -> None:
    # On a Redis of its own, where the count of keys shows any write.
    settings = settings_factory(redis_url=private_redis.url)
    async with api_client(settings) as client, redis.Redis.from_url(private_redis.url) as raw:
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == error_type
        assert error["message"]
        assert await queue_depth(settings) == 0
        assert await raw.dbsize() == 0
        # ...and the service keeps serving.
        assert (await submit(client)).status_code == 202


@pytest.mark.parametrize(
    "content",
    [b'{"task": "factorial",', b"", b"not json", b'{"task": "factorial", "input": {"n": 5}} x'],
)
async def test_malformed_json_is_a_422(
    client: httpx.AsyncClient, settings: Settings, content: bytes
) -> None:
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_input"
    assert await queue_depth(settings) == 0


async def test_the_error_message_names_the_problem(client: httpx.AsyncClient) -> None:
    error = (await submit(client, 10**9)).json()["error"]
    assert "1000000" in error["message"]
    assert error["details"] == [
        {"loc": "input.n", "message": "Input should be less than or equal to 1000000"}
    ]


async def test_batch_queues_every_job_in_order(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"jobs": [{"task": "factorial", "input": {"n": n}} for n in range(10)]}
    response = await client.post("/v1/jobs/batch", json=body)
    assert response.status_code == 202
    jobs = response.json()["jobs"]
    assert [job["input"]["n"] for job in jobs] == list(range(10))
    assert all(job["status"] == "queued" for job in jobs)
    assert await queue_depth(settings) == 10


async def test_a_batch_with_bad_items_names_each_index_and_queues_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    items: list[Any] = [{"task": "factorial", "input": {"n": n}} for n in range(6)]
    items[1]["input"]["n"] = -1
    items[3] = {"task": "nope", "input": {}}
    items[4] = "not an object"
    items[5]["deadline_s"] = True
    response = await client.post("/v1/jobs/batch", json={"jobs": items})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert sorted({d["index"] for d in error["details"]}) == [1, 3, 4, 5]
    assert "1, 3, 4, 5" in error["message"]
    assert await queue_depth(settings) == 0


async def test_batch_limits(client: httpx.AsyncClient, settings: Settings) -> None:
    empty = await client.post("/v1/jobs/batch", json={"jobs": []})
    assert empty.status_code == 422
    too_many = {"jobs": [{"task": "factorial", "input": {"n": 1}}] * (settings.max_batch + 1)}
    response = await client.post("/v1/jobs/batch", json=too_many)
    assert response.status_code == 422
    assert str(settings.max_batch) in response.json()["error"]["message"]
    assert await queue_depth(settings) == 0


@pytest.mark.parametrize("job_id", ["0" * 32, "nope", "A" * 32, "x" * 500])
@pytest.mark.parametrize("suffix", ["", "/result"])
async def test_unknown_jobs_are_404(client: httpx.AsyncClient, job_id: str, suffix: str) -> None:
    response = await client.get(f"/v1/jobs/{job_id}{suffix}")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    deleted = await client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 404


async def test_a_queued_job_has_no_result_and_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    job_id = (await submit(client)).json()["id"]
    result = await client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409
    assert result.json()["error"]["type"] == "not_finished"
    deleted = await client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 409
    assert deleted.json()["error"]["type"] == "not_finished"


async def test_an_unknown_result_format_is_a_400(client: httpx.AsyncClient) -> None:
    job_id = (await submit(client)).json()["id"]
    response = await client.get(f"/v1/jobs/{job_id}/result", params={"format": "octal"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


async def test_tasks_lists_the_inputs_and_limits(client: httpx.AsyncClient) -> None:
    tasks = {task["name"]: task for task in (await client.get("/v1/tasks")).json()["tasks"]}
    factorial = tasks["factorial"]
    assert factorial["limits"] == {"max_n": 1_000_000}
    assert factorial["input_schema"]["properties"]["n"]["maximum"] == 1_000_000
    assert factorial["result_formats"] == ["decimal", "hex"]


async def test_health_readiness_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    readiness = ready.json()
    tasks = readiness.pop("tasks")
    assert readiness == {"redis": "ok", "rabbitmq": "ok", "queue_depth": 0, "consumers": 0}
    # Each task's own queue, none served: no worker runs in this test.
    assert tasks["factorial"] == {"queue_depth": 0, "consumers": 0}
    assert set(tasks) == {task["name"] for task in (await client.get("/v1/tasks")).json()["tasks"]}
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert {"/v1/jobs", "/v1/jobs/batch", "/factorial"} <= set(schema["paths"])


async def test_unknown_routes_and_methods_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    wrong = await client.put("/v1/jobs")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "method_not_allowed"
    # Allow names every method of the path, though separate routes serve them.
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "POST"}
    one_job = await client.put(f"/v1/jobs/{'a' * 32}")
    assert set(one_job.headers["allow"].split(", ")) == {"DELETE", "GET"}
    # "batch" is no job id: only the batch route serves that path.
    batch = await client.put("/v1/jobs/batch")
    assert batch.headers["allow"] == "POST"


async def test_the_openapi_document_describes_this_deployments_tasks(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """A request valid by the document is one the API takes: each task's own
    input schema, the result formats, the batch limit; webhooks only when on."""
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    request = components["JobRequest"]
    assert request["properties"]["task"]["enum"] == sorted(TaskRegistry.from_settings(settings))
    factorial = next(b for b in request["oneOf"] if b["properties"]["task"]["const"] == "factorial")
    input_ref = factorial["properties"]["input"]["$ref"].rsplit("/", 1)[-1]
    assert components[input_ref]["properties"]["n"]["maximum"] == settings.max_n
    assert "webhook" not in request["properties"]
    assert components["BatchRequest"]["properties"]["jobs"]["maxItems"] == settings.max_batch
    [fmt] = [
        p
        for p in schema["paths"]["/v1/jobs/{job_id}/result"]["get"]["parameters"]
        if p["name"] == "format"
    ]
    formats = {
        f.name for task in TaskRegistry.from_settings(settings).values() for f in task.formats
    }
    assert fmt["schema"]["enum"] == sorted(formats)
    assert {"decimal", "hex", "json", "f32", "text"} <= formats
