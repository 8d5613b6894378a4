"""The embed task: all-MiniLM-L6-v2 behind the queue, batched, equal to the model
called directly; and a worker that serves it takes no other task's jobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from factq.tasks.embed import DIMENSION, load_model
from tests.conftest import api_client, running_worker
from tests.support.backends import queue_depth
from tests.support.service import environment
from tests.support.waiting import wait_for_job, wait_for_jobs

TEXTS = [
    ["A man is eating food."],
    ["The new movie is awesome.", "The cat sits outside.", ""],
    ["A queue puts slow computations behind a fast API; " * 20],
]


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    """The model, called directly in this process, as a user would."""
    yield load_model()


async def submit(client: httpx.AsyncClient, task: str, value: dict[str, Any]) -> str:
    response = await client.post("/v1/jobs", json={"task": task, "input": value})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_embed_jobs_give_the_models_vectors_and_stay_off_other_workers(
    settings_factory, model: Any
) -> None:
    settings = settings_factory(concurrency=1, result_cache_ttl_s=0)
    embed_only = settings.model_copy(update={"worker_tasks": "embed"})
    factorial_only = settings.model_copy(update={"worker_tasks": "factorial"})
    async with api_client(settings) as client:
        ids = [await submit(client, "embed", {"texts": texts}) for texts in TEXTS]
        factorial = await submit(client, "factorial", {"n": 20})
        async with running_worker(embed_only):
            jobs = await wait_for_jobs(client, ids, timeout_s=60)
            # A worker that serves embed takes no factorial job.
            assert (await client.get(f"/v1/jobs/{factorial}")).json()["status"] == "queued"
            assert await queue_depth(settings, "factorial") == 1
        later = await submit(client, "embed", {"texts": ["later"]})
        async with running_worker(factorial_only):
            assert (await wait_for_job(client, factorial))["status"] == "succeeded"
            # And a factorial worker takes no embed job.
            assert (await client.get(f"/v1/jobs/{later}")).json()["status"] == "queued"
            assert await queue_depth(settings, "embed") == 1

        for job_id, texts in zip(ids, TEXTS, strict=True):
            job = jobs[job_id]
            assert job["status"] == "succeeded", job
            # One text at a time, as the model is called without factq.
            expected = np.stack(
                [model.encode([text], normalize_embeddings=True)[0] for text in texts]
            )
            result = job["result"]
            assert result["dimension"] == DIMENSION
            assert result["count"] == len(texts)
            assert result["first"] == pytest.approx(expected[0][:8].tolist(), abs=1e-4)
            response = await client.get(result["url"])
            assert response.headers["content-type"] == "application/json"
            vectors = np.array(response.json()["vectors"], dtype=np.float32)
            raw = await client.get(result["url"], params={"format": "f32"})
            assert raw.headers["content-type"] == "application/octet-stream"
            packed = np.frombuffer(raw.content, dtype="<f4").reshape(len(texts), DIMENSION)
            assert np.array_equal(packed, vectors)
            assert vectors.shape == (len(texts), DIMENSION)
            cosines = np.sum(vectors * expected, axis=1) / (
                np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
            )
            assert cosines.min() > 0.9999, cosines
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"texts": []}, "at least 1 item"),
        ({"texts": ["x"] * 65}, "at most 64 items"),
        ({"texts": ["x" * 2_001]}, "at most 2000 characters"),
        ({"texts": [1]}, "valid string"),
        ({"texts": "one text"}, "valid list"),
        ({"text": ["a"]}, "Field required"),
    ],
)
async def test_embed_input_beyond_its_limits_is_refused(
    client: httpx.AsyncClient, value: dict[str, Any], problem: str
) -> None:
    response = await client.post("/v1/jobs", json={"task": "embed", "input": value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["type"] == "invalid_input"
    assert problem in body["error"]["message"]


async def test_the_task_list_describes_embed(client: httpx.AsyncClient) -> None:
    tasks = {task["name"]: task for task in (await client.get("/v1/tasks")).json()["tasks"]}
    embed = tasks["embed"]
    assert embed["result_formats"] == ["json", "f32"]
    assert embed["batch"] == {"max_batch_size": 32, "max_batch_delay_ms": 5.0}
    assert embed["limits"] == {"max_texts": 64, "max_chars": 2000}
    assert embed["deterministic"] is True
    assert embed["version"].startswith("all-MiniLM-L6-v2/")
    assert embed["memory_mib"] > 0
    assert embed["input_schema"]["properties"]["texts"]["maxItems"] == 64
    assert set(embed["output_schema"]["properties"]) == {"dimension", "count", "first"}
    # No worker in this test: nobody serves it.
    assert embed["consumers"] == 0
    assert tasks["factorial"]["batch"] is None


def test_a_worker_told_an_unknown_task_says_so_in_one_line(settings_factory) -> None:
    settings = settings_factory()
    done = subprocess.run(
        [sys.executable, "-m", "factq", "worker", "--tasks", "embed,nope"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "nope" in line]
    assert len(lines) == 1
    assert "unknown task 'nope'" in lines[0] and "factorial" in lines[0]
