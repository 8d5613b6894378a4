"""A task plugin, found through its entry point and run end to end.

`tests/plugins/factq-example-plugin` is a package of its own, installed in the
test environment by `make install`; it names its module under the
`factq.tasks` entry points. No setting names it: the deployment below has no
FACTQ_TASK_MODULES at all.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factq.settings import Settings
from factq.tasks import TaskRegistry
from tests.conftest import make_settings
from tests.support.backends import delete_namespace
from tests.support.service import running_service
from tests.support.waiting import wait_for_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def plugin_settings() -> Iterator[Settings]:
    # The delay set per task, over the plugin's own 50 ms (the size stays 8).
    settings = make_settings(
        task_modules="",
        worker_tasks="factorial,shout",
        task_batching={"shout": {"max_batch_delay_ms": 80}},
    )
    yield settings
    asyncio.run(delete_namespace(settings))


def test_the_plugin_is_an_installed_entry_point() -> None:
    [entry_point] = [
        ep for ep in importlib.metadata.entry_points(group="factq.tasks") if ep.name == "shout"
    ]
    assert entry_point.value == "factq_example_plugin"
    assert entry_point.dist is not None and entry_point.dist.name == "factq-example-plugin"
    registry = TaskRegistry.from_settings(Settings(namespace="unit"))
    assert "shout" in registry
    assert "factq_example_plugin" in registry.modules


async def test_a_plugin_task_runs_end_to_end_batched_with_its_model_loaded_once(
    plugin_settings: Settings, tmp_path: Path
) -> None:
    with running_service(plugin_settings, tmp_path, workers=1, concurrency=1) as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
            tasks = {t["name"]: t for t in (await http.get("/v1/tasks")).json()["tasks"]}
            assert tasks["shout"]["batch"] == {"max_batch_size": 8, "max_batch_delay_ms": 80.0}
            assert tasks["shout"]["consumers"] == 1
            assert set(tasks["shout"]["output_schema"]["properties"]) == {
                "text",
                "model_pid",
                "loads",
                "batch",
            }
            texts = ["hello", "boom", "queue", "model"]
            response = await http.post(
                "/v1/jobs/batch",
                json={"jobs": [{"task": "shout", "input": {"text": t}} for t in texts]},
            )
            assert response.status_code == 202, response.text
            ids = [job["id"] for job in response.json()["jobs"]]
            jobs = await wait_for_jobs(http, ids)
            values = {
                job_id: (await http.get(f"/v1/jobs/{job_id}/result")).text
                for job_id in ids
                if jobs[job_id]["status"] == "succeeded"
            }
    by_text = dict(zip(texts, ids, strict=True))
    boom = jobs[by_text["boom"]]
    # The batch's call raised on "boom": each input ran again alone, and only
    # that job failed.
    assert boom["status"] == "failed"
    assert boom["error"] == {"type": "task_error", "message": "ValueError: boom"}
    for text in ("hello", "queue", "model"):
        job = jobs[by_text[text]]
        assert job["status"] == "succeeded", job
        assert job["result"]["text"] == text.upper() + "!"
        assert values[job["id"]] == text.upper() + "!"
        # Loaded once in the one pool process, which ran every call.
        assert job["result"]["loads"] == 1
    assert len({jobs[by_text[t]]["result"]["model_pid"] for t in ("hello", "queue", "model")}) == 1
