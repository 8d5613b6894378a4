"""`GET /metrics` in one API process, and the queue depths it asks RabbitMQ for."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from factq.api.queue_gauges import QueueGauges
from factq.broker import Broker, JobMessage
from factq.submit import new_job_id
from tests.support.waiting import until_true


async def samples(client: httpx.AsyncClient) -> dict[tuple[str, tuple[str, ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.values()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_a_submission_and_a_queued_job_show(client: httpx.AsyncClient) -> None:
    # This test process's metrics: other tests' submissions count in them too.
    before = REGISTRY.get_sample_value("factq_jobs_submitted_total", {"task": "factorial"}) or 0
    response = await client.post("/v1/jobs", json={"task": "factorial", "input": {"n": 10}})
    assert response.status_code == 202
    after = await samples(client)
    assert after[("factq_jobs_submitted_total", ("factorial",))] == before + 1
    # No worker here: the job waits in its queue.
    assert after[("factq_queue_depth", ("factorial",))] == 1
    assert after[("factq_queue_consumers", ("factorial",))] == 0


async def test_scrapes_together_ask_rabbitmq_once(broker: Broker) -> None:
    gauges = QueueGauges(broker)
    assert (await gauges.current() or {})["factorial"].depth == 0
    await broker.publish_jobs([JobMessage(job_id=new_job_id(), task="factorial", input={"n": 1})])
    storm = await asyncio.gather(*(gauges.current() for _ in range(50)))
    # Within the interval, every scrape has the depth RabbitMQ gave first.
    assert {(stats or {})["factorial"].depth for stats in storm} == {0}

    async def asked_again() -> bool:
        return (await gauges.current() or {})["factorial"].depth == 1

    await until_true(asked_again, timeout_s=15)
